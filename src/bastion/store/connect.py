"""Where a store lives: a SQLite file or a PostgreSQL server, resolved from a path, a URL or the environment.

``Store()`` reads ``$BASTION_STORE`` (a path or URL) and else opens ``$BASTION_HOME/bastion.sqlite``. SQLite runs
in WAL mode with a 30 s busy timeout, and writes begin ``IMMEDIATE`` so that concurrent writers queue instead of
failing; PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from bastion.errors import BastionError

SQLITE_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
_PG = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE = {"sqlite", "sqlite+pysqlite"}
_FORMS = "a file path, sqlite:///path/to/bastion.sqlite or postgresql://user@host:port/database"


class StoreError(BastionError):
    """A results store that cannot be opened, reached, read or written."""


def default_home() -> Path:
    """Where runs live: ``$BASTION_HOME`` or ``./bastion-runs``."""
    return Path(os.environ.get("BASTION_HOME", "bastion-runs"))


@dataclass(frozen=True)
class Target:
    """A resolved store: the SQLAlchemy URL, the SQLite file (``None`` on a server), the folder for reports
    (``home``) and a printable name (a server URL's password hidden)."""

    url: URL
    path: Path | None
    home: Path
    name: str

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"


def resolve(target: str | Path | None) -> Target:
    """A path (SQLite), a ``sqlite:///`` or ``postgresql://`` URL, or ``None`` (``$BASTION_STORE`` or the default)."""
    if target is None:
        target = os.environ.get("BASTION_STORE") or default_home() / "bastion.sqlite"
    if isinstance(target, Path) or "://" not in str(target):
        return _sqlite_file(Path(target))
    try:
        url = make_url(str(target))
    except (ArgumentError, ValueError) as exc:
        shown = re.sub(r"://[^/@]*@", "://***@", str(target))  # no password in messages
        raise StoreError(f"--store {shown!r} is not a database URL ({exc}); use {_FORMS}.") from None
    if url.drivername in _SQLITE:
        if not url.database or url.database == ":memory:":
            raise StoreError(f"--store {target!r} names no database file; use {_FORMS}.")
        return _sqlite_file(Path(url.database))
    if url.drivername in _PG:
        if not url.database:
            raise StoreError(f"--store {_hidden(url)} names no database; use {_FORMS}.")
        url = url.set(drivername="postgresql+psycopg")
        return Target(url, None, default_home(), _hidden(url))
    raise StoreError(f"--store {_hidden(url)}: bastion stores runs in SQLite or PostgreSQL, not "
                     f"{url.get_backend_name()!r}; use {_FORMS}.")


def _sqlite_file(path: Path) -> Target:
    return Target(URL.create("sqlite+pysqlite", database=str(path)), path, path.parent, str(path))


def _hidden(url: URL) -> str:
    return url.render_as_string(hide_password=True).replace("postgresql+psycopg://", "postgresql://")


def engine_for(target: Target) -> Engine:
    if target.is_sqlite:
        assert target.path is not None
        try:
            target.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"The results store's folder {target.path.parent} cannot be created ({exc.strerror}); "
                             "point BASTION_HOME or --store at a folder you can write.") from None
        engine = create_engine(target.url, connect_args={"timeout": SQLITE_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    args: dict[str, Any] = {} if "connect_timeout" in target.url.query else {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(target.url, connect_args=args, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN itself (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    deadline = time.monotonic() + SQLITE_TIMEOUT_S
    while True:  # switching to WAL ignores the busy timeout: two processes opening a new store at once wait here
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def translated(target: Target, doing: str) -> Iterator[None]:
    """Turn a database failure into one ``StoreError`` line that names the fix."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(describe(target, exc, doing)) from None


def describe(target: Target, exc: SQLAlchemyError, doing: str) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if target.is_sqlite:
        fix = "if the file is damaged, move it aside (bastion never rewrites it) and pass another --store"
        if "locked" in first or "busy" in first:
            fix = "another process holds the database; wait for it or pass another --store"
        return f"The results store {target.name} could not be {doing} ({first}); {fix}."
    fix = ("check that the PostgreSQL server is running and reachable, and the user, password and database name; "
           "or pass another --store")
    return f"The results store {target.name} could not be {doing} ({first}); {fix}."
