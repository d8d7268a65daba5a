"""A benign user, run inside its own namespace: ``python client.py SERVER SEED SECONDS KEY USER PASSWORD``.

It repeats seeded, randomly chosen tasks (browse a few pages, look at a product, search, log in with the right
password, resolve names, an SSH session, an anonymous FTP download, a database query) separated by exponential
think times (mean ``THINK`` s), until SECONDS have passed or ``MAX_TASKS`` are done. Every network call has a
timeout; failures are counted, never retried. It imports only the standard library and numpy (it is run as a script, so
each client starts in a fraction of a second)."""

from __future__ import annotations

import ftplib
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np

HOSTS = ("www", "shop", "mail", "ftp", "db", "api", "cdn", "intranet")

THINK = 0.8
MAX_TASKS = 5000
TIMEOUT = 10.0
PAGES = ("/", "/about", "/contact", "/products", "/news", "/login")
TERMS = ("shoes", "red scarf", "winter coat", "socks", "gift card", "umbrella", "boots size 42")
ACCOUNT = ["", ""]  # the shop's user and password, from the command line
TASKS = ("browse", "product", "search", "login", "dns", "ssh", "ftp", "db")
WEIGHTS = np.array([0.30, 0.12, 0.10, 0.08, 0.20, 0.06, 0.07, 0.07])


def _get(server: str, path: str) -> None:
    with urllib.request.urlopen(f"http://{server}{path}", timeout=TIMEOUT) as r:
        r.read()


def browse(server: str, rng: np.random.Generator, key: str) -> None:
    for _ in range(int(rng.integers(1, 5))):
        _get(server, str(rng.choice(PAGES)))
        time.sleep(float(rng.exponential(0.3)))


def product(server: str, rng: np.random.Generator, key: str) -> None:
    _get(server, f"/product?id={int(rng.integers(1, 50))}")


def search(server: str, rng: np.random.Generator, key: str) -> None:
    _get(server, "/search?" + urllib.parse.urlencode({"q": str(rng.choice(TERMS))}))


def login(server: str, rng: np.random.Generator, key: str) -> None:
    _get(server, "/login")
    time.sleep(float(rng.exponential(1.0)))
    data = urllib.parse.urlencode({"user": ACCOUNT[0], "pass": ACCOUNT[1]}).encode()
    with urllib.request.urlopen(f"http://{server}/login", data=data, timeout=TIMEOUT) as r:
        r.read()


def dns_query(name: str, qid: int) -> bytes:
    """An RFC 1035 query for the A record of ``name``, recursion desired."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns(server: str, rng: np.random.Generator, key: str) -> None:
    for _ in range(int(rng.integers(1, 4))):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            s.sendto(dns_query(f"{rng.choice(HOSTS)}.shop.lan", int(rng.integers(0, 65536))), (server, 53))
            s.recv(512)


def ssh(server: str, rng: np.random.Generator, key: str) -> None:
    subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{server}"],
                   capture_output=True, timeout=TIMEOUT + 5, check=False)


def ftp(server: str, rng: np.random.Generator, key: str) -> None:
    with ftplib.FTP(server, timeout=TIMEOUT) as f:
        f.login()
        names = f.nlst()
        for name in rng.choice(names, size=min(len(names), int(rng.integers(1, 3))), replace=False):
            f.retrbinary(f"RETR {name}", lambda _b: None)


def db(server: str, rng: np.random.Generator, key: str) -> None:
    n = int(rng.integers(1, 200))
    subprocess.run(["psql", "-h", server, "-U", "postgres", "-d", "postgres", "-Atc",
                    f"SELECT g, md5(g::text) FROM generate_series(1, {n}) g"],
                   capture_output=True, timeout=TIMEOUT, check=False)


def main(server: str, seed: int, seconds: float, key: str) -> None:
    rng = np.random.default_rng(seed)
    tasks = {name: globals()[name] for name in TASKS}
    end = time.monotonic() + seconds
    time.sleep(float(rng.uniform(0, 2.0)))
    failures: dict[str, int] = {}
    for _ in range(MAX_TASKS):
        if time.monotonic() >= end:
            break
        name = str(rng.choice(TASKS, p=WEIGHTS))
        try:
            tasks[name](server, rng, key)
        except (OSError, subprocess.SubprocessError, ftplib.Error) as exc:
            failures[f"{name}: {type(exc).__name__}"] = failures.get(f"{name}: {type(exc).__name__}", 0) + 1
        time.sleep(min(float(rng.exponential(THINK)), max(0.0, end - time.monotonic())))
    sys.stdout.write(f"failures: {failures}\n")


if __name__ == "__main__":
    ACCOUNT[:] = sys.argv[5:7]
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
