"""The server namespace's services, each with a throw-away configuration in the run's temporary folder and bound to
the server's address inside its namespace only: HTTP (``webapp``, port 80), DNS (dnsmasq, answers ``*.shop.lan``
only, no upstream), SSH (sshd with its own host key; a key-only root login whose command is forced to a harmless
one), FTP (vsftpd, anonymous read-only; every account of the host refused) and PostgreSQL (a fresh cluster as user
postgres, trust within the lab subnet)."""

from __future__ import annotations

import glob
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import InvalidInputError
from bastion.ids.generate.actors import SERVER_IP, SUBNET
from bastion.ids.generate.client import HOSTS
from bastion.ids.generate.lab import Lab

TOOLS = {"nmap": "nmap", "hping3": "hping3", "tcpdump": "tcpdump", "hydra": "hydra", "slowhttptest": "slowhttptest",
         "dnsmasq": "dnsmasq-base", "/usr/sbin/sshd": "openssh-server", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client", "/usr/sbin/vsftpd": "vsftpd", "runuser": "util-linux"}
# optional: PostgreSQL (the database port and the clients' queries are left out without it)


@dataclass(frozen=True)
class Services:
    tmp: Path
    client_key: Path


ANON = ("ftp", "anonymous")  # vsftpd's anonymous login names
HERE = Path(__file__).parent  # webapp.py, client.py and webattack.py run as scripts (no bastion import)


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def start_services(lab: Lab, ns: str, tmp: Path, seconds: float) -> Services:
    tmp.chmod(0o755)
    logs = tmp / "logs"
    logs.mkdir()
    lab.spawn(ns, [sys.executable, str(HERE / "webapp.py"), SERVER_IP, "80", str(seconds)], log=logs / "http.log")
    lab.spawn(ns, ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                   "--bind-interfaces", f"--listen-address={SERVER_IP}", "--local=/lan/", "--user=nobody",
                   f"--pid-file={tmp}/dnsmasq.pid",
                   *(f"--host-record={h}.shop.lan,{SUBNET}.{1 + i % 3}" for i, h in enumerate(HOSTS))],
              log=logs / "dns.log")
    key = _sshd(lab, ns, tmp, logs)
    _vsftpd(lab, ns, tmp, logs)
    _postgres(lab, ns, tmp, logs)
    _wait_listening(ns, 15.0)
    return Services(tmp, key)


def _wait_listening(ns: str, seconds: float) -> None:
    """Until every service listens in ``ns`` (``ss``), at most ``seconds``."""
    want = {"80", "22", "21", "53"} | ({"5432"} if pg_bin() else set())
    for _ in range(int(seconds / 0.25)):
        p = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltun"], capture_output=True, text=True, timeout=10,
                           check=False)
        if want <= {line.split()[4].rsplit(":", 1)[-1] for line in p.stdout.splitlines() if len(line.split()) > 4}:
            return
        time.sleep(0.25)
    raise InvalidInputError(f"the lab's services did not all start within {seconds:.0f} s (wanted ports "
                            f"{sorted(want)}); see the logs folder beside the capture")


def _sshd(lab: Lab, ns: str, tmp: Path, logs: Path) -> Path:
    d = tmp / "ssh"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    (d / "sshd_config").write_text(
        f"Port 22\nListenAddress {SERVER_IP}\nHostKey {d / 'host'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxAuthTries 2\nMaxStartups 100:30:200\n"
        "LoginGraceTime 20\nForceCommand echo shop-server; date; uptime\nAllowTcpForwarding no\nX11Forwarding no\n")
    lab.spawn(ns, ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], log=logs / "sshd.log")
    return d / "client"


def _vsftpd(lab: Lab, ns: str, tmp: Path, logs: Path) -> None:
    root, empty = tmp / "ftp", tmp / "empty"
    root.mkdir(mode=0o755)
    empty.mkdir(mode=0o755)
    for i in range(5):
        (root / f"report{i}.txt").write_text("quarterly figures\n" * (40 * (i + 1)))
    # every account of this host is on the deny list, so none is ever tried: a guessed user name that is no account
    # is asked for its password and refused (PAM), then disconnected, so each guess is one connection
    (tmp / "ftp_users").write_text("".join(f"{p.pw_name}\n" for p in pwd.getpwall() if p.pw_name not in ANON))
    (tmp / "vsftpd.conf").write_text(
        f"listen=YES\nlisten_ipv6=NO\nlisten_address={SERVER_IP}\nbackground=NO\nanonymous_enable=YES\n"
        f"anon_root={root}\nno_anon_password=YES\nlocal_enable=YES\nuserlist_enable=YES\nuserlist_deny=YES\n"
        f"userlist_file={tmp / 'ftp_users'}\nwrite_enable=NO\nseccomp_sandbox=NO\npam_service_name=vsftpd\n"
        f"secure_chroot_dir={empty}\nftp_username=ftp\nnopriv_user=nobody\nmax_login_fails=1\npasv_enable=YES\n"
        "pasv_min_port=40000\npasv_max_port=40200\nxferlog_enable=NO\nmax_clients=200\nmax_per_ip=50\n")
    lab.spawn(ns, ["/usr/sbin/vsftpd", str(tmp / "vsftpd.conf")], log=logs / "ftp.log")


def _postgres(lab: Lab, ns: str, tmp: Path, logs: Path) -> None:
    bin_ = pg_bin()
    if bin_ is None:
        return
    data = tmp / "pg"
    data.mkdir()
    subprocess.run(["chown", "postgres:postgres", str(data)], check=True, timeout=10)
    subprocess.run(["runuser", "-u", "postgres", "--", str(bin_ / "initdb"), "-D", str(data), "-A", "trust",
                    "--no-sync", "-U", "postgres"], check=True, timeout=120, capture_output=True)
    with (data / "pg_hba.conf").open("a") as f:
        f.write(f"host all all {SUBNET}.0/24 trust\n")
    lab.spawn(ns, ["runuser", "-u", "postgres", "--", str(bin_ / "postgres"), "-D", str(data), "-p", "5432",
                   "-c", f"listen_addresses={SERVER_IP}", "-c", f"unix_socket_directories={data}",
                   "-c", "fsync=off"], log=logs / "postgres.log")
