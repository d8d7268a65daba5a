"""Live flow sources for ``bastion.ids.stream``, metered inside network namespaces this run creates (root).

- ``replay_source``: a veth pair between two namespaces (``<prefix>-tx``: ``tx0`` <-> ``<prefix>-rx``: ``rx0``, no
  bridge, no addresses, IPv6 off, MTU 65535 so a capture's offloaded super-frames replay as they are): ``tcpreplay``
  sends the pcap on ``tx0`` (``--topspeed``, or ``--multiplier`` the recorded pace), the meter captures on ``rx0``.
  A bridge would not do: both directions of the capture enter from the same port, so a learning bridge drops every
  answer addressed to a MAC it has learned on that port. The pcap must be Ethernet (what ``tcpdump -i br0``
  writes, and the generator's captures).
- ``live_source``: the generator's lab (``bastion.ids.generate``: services, seeded benign clients, bounded attacks)
  for ``seconds``, metered on the bridge ``br0``; flows carry their ground-truth labels.

The meter is ``livemeter.py`` started with ``ip netns exec`` (why not ``setns``: see that file), each flow one JSON
line on its stdout; a heartbeat from the far side of its link (``tx0``; the server's ``eth0``) keeps its clock moving
(see that file). Live timeouts are short (idle ``LIVE_IDLE_S`` = 2 s, active ``LIVE_ACTIVE_S`` = 10 s) so a flow is
scored about two seconds after its last packet; the trade-off against CIC-IDS2017's 120 s idle timeout: a
conversation with a pause longer than 2 s (a keep-alive connection, a slow attack such as slowloris that sends a
header every few seconds) is cut into several shorter flows, whose features differ from the 120 s flows the snapshot
(and so the detector) was made of; a long flow is cut every 10 s, and a flow that ends behind a long-lived one waits
for it up to the active timeout (see ``livemeter.py``). After the traffic ends the source waits ``idle + 1.5`` s
so every flow expires, then ends. Teardown (any exit) kills everything in the namespaces and deletes them. The
capture ring is ``CAPTURE_BUFFER`` (64 MiB), so a top-speed replay burst waits for the meter instead of being
dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from bastion.errors import InvalidInputError
from bastion.ids.flows import streamer_options
from bastion.ids.generate import lab as lab_mod
from bastion.ids.generate.lab import IP, Lab
from bastion.ids.stream import END, FlowQueue

METER = Path(__file__).parent / "livemeter.py"
LIVE_IDLE_S, LIVE_ACTIVE_S = 2, 10
DRAIN_S = 1.5  # after the idle timeout: the meter's scan interval, the pipe and the reader
PCAP_ETHERNET = 1
CAPTURE_BUFFER = 64 * 2**20  # bytes of capture ring: a top-speed replay burst waits for the meter, is not dropped


def require_root(what: str, alternative: str) -> None:
    """One line naming the fix when network namespaces cannot be made."""
    if not lab_mod.has_privilege():
        raise InvalidInputError(f"{what} needs network namespaces: run as root (sudo) or with CAP_NET_ADMIN and "
                                f"CAP_SYS_ADMIN, or {alternative}")


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], capture_output=True, text=True, timeout=20, check=True)


class ReplayLab(Lab):
    """Two namespaces joined by one veth pair (``tx0`` in ``<prefix>-tx``, ``rx0`` in ``<prefix>-rx``)."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__((), prefix=prefix)
        self.tx, self.rx = f"{self.prefix}-tx", f"{self.prefix}-rx"

    def namespaces(self) -> list[str]:
        return [self.tx, self.rx]

    def _build(self) -> None:
        for ns in (self.tx, self.rx):
            _ip("netns", "add", ns)
            self._quiet(ns)
        _ip("-n", self.tx, "link", "add", "tx0", "mtu", "65535", "type", "veth", "peer", "name", "rx0", "mtu",
            "65535", "netns", self.rx)
        for ns, dev in ((self.tx, "tx0"), (self.rx, "rx0")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")


class Meter:
    """``livemeter.py`` on ``iface`` in ``ns``; its flows go to ``out`` (marked ``_live``)."""

    def __init__(self, ns: str, iface: str, out: FlowQueue, *, idle: int, active: int, logs: Path) -> None:
        self.ns, self.out, self.stopping = ns, out, threading.Event()
        self.beats: subprocess.Popen | None = None
        options = json.dumps({**streamer_options(idle_timeout=idle, active_timeout=active),
                              "socket_buffer_size": CAPTURE_BUFFER})
        self.errors: IO[str] = (logs / f"meter-{ns}.log").open("w+")
        self.proc = subprocess.Popen([IP, "netns", "exec", ns, sys.executable, str(METER), iface, options],
                                     stdout=subprocess.PIPE, stderr=self.errors, stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            record["_live"] = True
            self.out.put(record)
        if not self.stopping.is_set():
            self.out.put(InvalidInputError(f"the flow meter in {self.ns} stopped: {self.last_error()}"))

    def last_error(self) -> str:
        self.errors.flush()
        self.errors.seek(0)
        lines = [line.strip() for line in self.errors.read().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.proc.poll()}"

    def wait_capturing(self, seconds: float = 20.0) -> None:
        """Until the meter's packet socket exists in its namespace (``/proc/net/packet``), at most ``seconds``."""
        for _ in range(int(seconds / 0.1)):
            if self.proc.poll() is not None:
                raise InvalidInputError(f"the flow meter in {self.ns} did not start: {self.last_error()}")
            sockets = subprocess.run([IP, "netns", "exec", self.ns, "cat", "/proc/net/packet"], capture_output=True,
                                     text=True, timeout=10, check=False).stdout.splitlines()
            if len(sockets) > 1:
                time.sleep(0.3)  # the socket is bound before libpcap's ring is ready
                return
            time.sleep(0.1)
        raise InvalidInputError(f"the flow meter in {self.ns} did not open its capture in {seconds:.0f} s: "
                                f"{self.last_error()}")

    def heartbeat(self, ns: str, iface: str, seconds: float) -> None:
        """Send the heartbeat from ``iface`` in ``ns`` (the far side of the meter's link) for ``seconds``."""
        self.beats = subprocess.Popen([IP, "netns", "exec", ns, sys.executable, str(METER), "--beat", iface,
                                       f"{seconds:.0f}"], stdout=subprocess.DEVNULL, stderr=self.errors,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        self.stopping.set()
        for proc in (self.beats, self.proc):
            if proc is not None:
                _end(proc)
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.errors.close()


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _drive(out: FlowQueue, traffic: Callable[[], None], idle: int) -> None:
    """Run the traffic, let every flow expire, then end the source (errors go to the scorer)."""
    try:
        traffic()
        time.sleep(idle + DRAIN_S)
    except BaseException as exc:
        out.put(exc)
    out.put(END)


def _check_pcap(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(f"no pcap at {path}; give the path of a capture file (e.g. --replay capture.pcap)")
    with path.open("rb") as f:
        head = f.read(24)
    magic = head[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = "little" if magic[0] in (0xD4, 0x4D) else "big"
        link = int.from_bytes(head[20:24], order) & 0x0FFFFFFF
        if link != PCAP_ETHERNET:
            raise InvalidInputError(f"{path} has link type {link}, not Ethernet (1): tcpreplay sends Ethernet frames; "
                                    "capture on an Ethernet interface or score the file offline with --pcap")
    elif magic != b"\x0a\x0d\x0d\x0a":
        raise InvalidInputError(f"{path} is not a pcap or pcapng file; give a capture (tcpdump -w)")


@contextmanager
def replay_source(pcap: str | Path, *, speed: float | None = None, idle: int = LIVE_IDLE_S,
                  active: int = LIVE_ACTIVE_S, timeout: float = 300.0) -> Iterator[FlowQueue]:
    """The flows of ``pcap`` replayed with tcpreplay (``speed``: a multiplier of the recorded pace; None: as fast
    as it goes) and metered live; tcpreplay is killed after ``timeout`` seconds."""
    path = Path(pcap).resolve()
    _check_pcap(path)
    if speed is not None and not 0 < speed <= 1000:
        raise InvalidInputError(f"the replay speed must be in (0, 1000], got {speed}; or leave it out (top speed)")
    require_root("replaying a pcap", "score the file offline with --pcap")
    lab_mod.require_tools({"tcpreplay": "tcpreplay"})
    pace = ["--topspeed"] if speed is None else [f"--multiplier={speed:g}"]
    with tempfile.TemporaryDirectory(prefix="bastion-stream-") as tmp, ReplayLab() as lab:
        flows: FlowQueue = queue.Queue(maxsize=100_000)
        meter = Meter(lab.rx, "rx0", flows, idle=idle, active=active, logs=Path(tmp))
        try:
            meter.wait_capturing()
            meter.heartbeat(lab.tx, "tx0", timeout + idle + 60)
            logfile = Path(tmp) / "tcpreplay.log"

            def send() -> None:
                rc = lab.run(lab.tx, ["tcpreplay", "-i", "tx0", *pace, str(path)], timeout=timeout, log=logfile)
                if rc != 0:
                    lines = [s for s in logfile.read_text().splitlines() if s.strip()]
                    raise InvalidInputError(f"tcpreplay failed ({'timed out' if rc is None else f'exit {rc}'}): "
                                            f"{lines[-1] if lines else 'no output'}")

            threading.Thread(target=_drive, args=(flows, send, idle), daemon=True).start()
            yield flows
        finally:
            meter.stop()


@contextmanager
def live_source(seconds: float, *, seed: int = 0, clients: int = 3, idle: int = LIVE_IDLE_S,
                active: int = LIVE_ACTIVE_S) -> Iterator[tuple[FlowQueue, dict[str, str]]]:
    """The generator's traffic for ``seconds`` (its services, ``clients`` benign clients and the bounded attacks of
    ``seed``), metered live on its bridge; also the address -> label map of its actors (ground truth)."""
    from bastion.ids.generate.actors import ATTACKERS, SERVER, benign_clients, label_map
    from bastion.ids.generate.run import run_traffic
    from bastion.ids.generate.services import TOOLS

    if not 5 <= seconds <= 3600 or not 1 <= clients <= 50:
        raise InvalidInputError(f"--seconds must be in [5, 3600] and clients in [1, 50], got {seconds}, {clients}")
    require_root("live scoring of generated traffic", "replay a capture offline with --pcap")
    lab_mod.require_tools(TOOLS)
    actors = (SERVER, *benign_clients(clients), *ATTACKERS)
    with tempfile.TemporaryDirectory(prefix="bastion-stream-") as tmp, Lab(actors) as lab:
        flows: FlowQueue = queue.Queue(maxsize=100_000)
        meter = Meter(lab.bridge_ns, "br0", flows, idle=idle, active=active, logs=Path(tmp))
        try:
            meter.wait_capturing()
            meter.heartbeat(lab.ns(SERVER), "eth0", 2 * seconds + 120)
            Path(tmp).chmod(0o755)  # the services run as other users (postgres, ftp) under it, as in generate
            work = Path(tmp) / "work"
            work.mkdir()

            def traffic() -> None:
                run_traffic(lab, work, seconds, seed, actors[1:1 + clients], lambda *_: None, seconds / 60)

            threading.Thread(target=_drive, args=(flows, traffic, idle), daemon=True).start()
            yield flows, label_map(actors)
        finally:
            meter.stop()


__all__ = ["LIVE_ACTIVE_S", "LIVE_IDLE_S", "ReplayLab", "live_source", "replay_source", "require_root"]
