"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl in a temporary folder, on a free port of 127.0.0.1.

Chosen over pytest-postgresql because it is ~80 lines with no new dependency, and it handles the one awkward case
this CI has: the tests run as root, and initdb refuses root, so the server runs as the ``postgres`` user (created
by Debian's postgresql package) through ``runuser``. Debian keeps the binaries in /usr/lib/postgresql/VERSION/bin.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = ("install them as root with `apt-get install postgresql` (scripts/install-system-data.sh, run by "
                "`make test` as root, does it)")


def find_bindir() -> Path | None:
    """The newest Debian server binaries, else initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def unavailable_reason() -> str | None:
    """Why no server can be started here (the skip reason), or ``None``."""
    if find_bindir() is None:
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root, and there is no 'postgres' user to run the server as: {INSTALL_HINT}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``start()`` a cluster (user ``bastion``, trust authentication, 127.0.0.1 only); ``database()`` makes an empty
    database and returns its URL; ``stop()`` removes everything."""

    def __init__(self) -> None:
        bindir = find_bindir()
        assert bindir is not None, unavailable_reason()
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._names = itertools.count()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PgServer:
        done = self._run("initdb", "-D", str(self.data), "-U", "bastion", "-A", "trust", "-E", "UTF8", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        for _ in range(5):  # another process may take the free port between the check and the start
            self.port = _free_port()
            opts = f"-h 127.0.0.1 -p {self.port} -k '' -F -c max_connections=60 -c full_page_writes=off"
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                             "-o", opts, "start")
            if done.returncode == 0:
                return self
        raise RuntimeError(f"pg_ctl start failed: {done.stderr[-1000:]} {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://bastion@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=bastion dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
