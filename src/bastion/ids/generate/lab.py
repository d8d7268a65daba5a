"""The virtual network: Linux network namespaces joined by veth pairs to a bridge, and the processes run in them.

Everything lives in namespaces this run creates, named ``<prefix>-<actor>`` with a prefix unique to the run: the
bridge itself sits in its own namespace (``<prefix>-br``), so no interface, address or route is added to the host's
network and nothing can reach outside it. IPv6 is switched off in every namespace (no link-local chatter).
Teardown kills every process started in the run's namespaces, then deletes them; it runs on any exit
(``with Lab(...)``) and also clears leftovers of the same prefix before building.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO

from bastion.errors import InvalidInputError
from bastion.ids.generate.actors import Actor

log = logging.getLogger(__name__)

NS_PREFIX = "bids"
IP = "ip"


def has_privilege() -> bool:
    """Root, or CAP_NET_ADMIN and CAP_SYS_ADMIN (``ip netns add`` needs both)."""
    if os.geteuid() == 0:
        return True
    try:
        caps = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapEff"))
    except (OSError, StopIteration):
        return False
    eff = int(caps.split()[1], 16)
    return bool(eff & (1 << 12)) and bool(eff & (1 << 21))


def require_privilege() -> None:
    if not has_privilege():
        raise InvalidInputError("generating traffic needs network namespaces: run as root (or with CAP_NET_ADMIN and "
                                "CAP_SYS_ADMIN), or use the shipped snapshot (bastion.ids.snapshot.load_snapshot)")


def require_tools(tools: dict[str, str]) -> None:
    """``tools``: executable -> the Debian package that provides it."""
    for exe, package in tools.items():
        if shutil.which(exe) is None and not Path(exe).exists():
            raise InvalidInputError(f"{exe} is not installed: apt-get install -y {package} "
                                    "(or run scripts/install-system-data.sh as root)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=20, check=check)


def run_prefix() -> str:
    return f"{NS_PREFIX}{secrets.token_hex(3)}"


class Lab:
    """A bridge namespace plus one namespace per actor; ``spawn``/``run`` start processes inside one of them."""

    def __init__(self, actors: tuple[Actor, ...], *, prefix: str | None = None, subnet_bits: int = 24) -> None:
        self.actors = actors
        self.prefix = prefix or run_prefix()
        self.bits = subnet_bits
        self.bridge_ns = f"{self.prefix}-br"
        self.procs: list[subprocess.Popen] = []
        self.files: list[IO] = []

    def ns(self, actor: Actor) -> str:
        return f"{self.prefix}-{actor.name}"

    def namespaces(self) -> list[str]:
        return [self.bridge_ns, *(self.ns(a) for a in self.actors)]

    def __enter__(self) -> Lab:
        require_privilege()
        self.cleanup()
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _build(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        self._quiet(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, actor in enumerate(self.actors):
            ns = self.ns(actor)
            _ip("netns", "add", ns)
            self._quiet(ns)
            _ip("-n", self.bridge_ns, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", f"v{i}", "up")
            _ip("-n", ns, "addr", "add", f"{actor.ip}/{self.bits}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        log.info("lab %s: %d namespaces on bridge %s/br0", self.prefix, len(self.actors) + 1, self.bridge_ns)

    def _quiet(self, ns: str) -> None:
        """No IPv6 in the namespace (no router solicitations, no multicast listener reports)."""
        for key in ("all", "default"):
            subprocess.run([IP, "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"],
                           capture_output=True, timeout=20, check=False)

    def spawn(self, ns: str, argv: list[str], *, log: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``ns`` in its own process group (output appended to ``log``); killed at
        teardown."""
        out: IO | int = subprocess.DEVNULL
        if log is not None:
            out = log.open("a")
            self.files.append(out)
        p = subprocess.Popen([IP, "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def run(self, ns: str, argv: list[str], *, timeout: float, log: Path | None = None) -> int | None:
        """Run ``argv`` in ``ns`` to completion, killing its whole process group after ``timeout`` seconds."""
        p = self.spawn(ns, argv, log=log)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(p)
            return None

    def cleanup(self) -> None:
        for p in self.procs:
            _kill(p)
        self.procs.clear()
        for f in self.files:
            f.close()
        self.files.clear()
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        ours = [line.split()[0] for line in listed if line.startswith(self.prefix + "-")]
        for ns in ours:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                _signal(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=3)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        p.wait(timeout=5)

