"""Who is on the generator's virtual network: one network namespace per actor, each with its own address, so a
flow's ground-truth label is the class of the actor whose namespace sent it.

Labels follow CIC-IDS2017's names where the attack matches one (Sharafaldin et al., ICISSP 2018); hping3's
flood, which CIC-IDS2017 does not have, is "SYN Flood"."""

from __future__ import annotations

from dataclasses import dataclass

SUBNET = "10.23.0"
SERVER_IP = f"{SUBNET}.1"


@dataclass(frozen=True)
class Actor:
    name: str  # short: it is part of the namespace's name
    ip: str
    label: str
    tool: str  # what sends its traffic


BENIGN_TOOL = "python clients (urllib, DNS over UDP, ftplib, ssh, psql)"

ATTACKERS: tuple[Actor, ...] = (
    Actor("scan", f"{SUBNET}.101", "PortScan", "nmap -sS, -sT, -sU, -sV"),
    Actor("flood", f"{SUBNET}.102", "SYN Flood", "hping3 -S"),
    Actor("slowh", f"{SUBNET}.103", "DoS Slowhttptest", "slowhttptest -H"),
    Actor("slowl", f"{SUBNET}.104", "DoS slowloris", "python slowloris (bounded)"),
    Actor("sshp", f"{SUBNET}.105", "SSH-Patator", "hydra ssh"),
    Actor("ftpp", f"{SUBNET}.106", "FTP-Patator", "hydra ftp"),
    Actor("webbf", f"{SUBNET}.107", "Web Attack - Brute Force", "hydra http-post-form"),
    Actor("sqli", f"{SUBNET}.108", "Web Attack - Sql Injection", "python (urllib) SQL injection payloads"),
    Actor("xss", f"{SUBNET}.109", "Web Attack - XSS", "python (urllib) XSS payloads"),
)
SERVER = Actor("srv", SERVER_IP, "BENIGN", "http (python), dnsmasq, sshd, vsftpd, postgres")


def benign_clients(n: int) -> tuple[Actor, ...]:
    return tuple(Actor(f"ben{i}", f"{SUBNET}.{11 + i}", "BENIGN", BENIGN_TOOL) for i in range(n))


def label_map(actors: tuple[Actor, ...]) -> dict[str, str]:
    """Address -> label, for every actor but the server (the server only answers)."""
    return {a.ip: a.label for a in actors if a.ip != SERVER_IP}
