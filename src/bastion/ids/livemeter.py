"""The live flow meter, run as a script inside a network namespace:
``ip netns exec NS python livemeter.py INTERFACE OPTIONS_JSON``.

nfstream captures on INTERFACE with the ``NFStreamer`` keyword arguments of OPTIONS_JSON (bastion's
``flows.streamer_options`` with short timeouts) and writes each flow it expires to stdout as one JSON line: the
flow's nfstream attributes plus ``_emitted``, the wall-clock time (``time.time()``) at which the meter handed it over.
It imports nothing of bastion (no torch), so it starts in about a second, and runs until it is killed.

A child process rather than ``setns`` in the scorer: a network namespace is a property of a thread, nfstream forks
its meter processes from the caller, and the scorer's own threads and sockets must stay in the host's namespace;
``ip netns exec`` gives the meter the namespace from its first instruction, its stdout is the stream, and the run's
teardown kills it with everything else in the namespace.

The heartbeat (``livemeter.py --beat INTERFACE SECONDS``, run in a namespace on the far side of the meter's link):
nfstream's meter clock advances on packets, and its idle scan walks the flow cache oldest-created first and stops at
the first flow that is not idle (an updated flow is not moved to the end), so in a quiet moment, or behind one
long-lived flow, finished flows wait in the cache. Every ``HEARTBEAT_S`` seconds the heartbeat sends one small IPv6
UDP frame (link-local to all-nodes, to port 9 "discard", from a new source port each time, so each is its own
one-packet flow that goes idle and expires on time): the meter's clock moves on and flows expire within their idle
timeout. These are IPv6 flows, which bastion's IPv4-only mapping drops (``flows.to_features``); the namespaces have
IPv6 switched off, so nothing answers them. A flow created behind a long-lived one still waits until that one ends or
reaches the active timeout (nfstream checks it when the long flow's next packet arrives).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

HEARTBEAT_S = 0.25


def heartbeat_frame(port: int) -> bytes:
    """Ethernet (to 33:33:00:00:00:01) + IPv6 (fe80::1 -> ff02::1, hop limit 1) + UDP port -> 9, 4 zero bytes."""
    udp = struct.pack("!HHHH", port, 9, 12, 0) + bytes(4)
    src, dst = bytes.fromhex("fe80" + "0" * 27 + "1"), bytes.fromhex("ff02" + "0" * 27 + "1")
    ip6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 1) + src + dst
    return bytes.fromhex("333300000001" + "020000000001" + "86dd") + ip6 + udp


def beat(iface: str, seconds: float) -> int:
    """Send the heartbeat on ``iface`` every ``HEARTBEAT_S`` for ``seconds``."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for i in range(int(seconds / HEARTBEAT_S) + 1):
            sock.send(heartbeat_frame(10_000 + i % 50_000))
            time.sleep(HEARTBEAT_S)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--beat":
        return beat(argv[2], float(argv[3]))
    if len(argv) != 3:
        sys.stderr.write("usage: livemeter.py INTERFACE OPTIONS_JSON | livemeter.py --beat INTERFACE SECONDS\n")
        return 2
    from nfstream import NFStreamer

    try:
        streamer = NFStreamer(source=argv[1], **json.loads(argv[2]))
    except ValueError as exc:
        sys.stderr.write(f"nfstream cannot capture on {argv[1]}: {exc}\n")
        return 1
    out = sys.stdout
    for flow in streamer:
        record = dict(zip(flow.keys(), flow.values(), strict=True))
        record["_emitted"] = time.time()
        out.write(json.dumps(record) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
