"""NSL-KDD (Tavallaee et al., "A detailed analysis of the KDD CUP 99 data set", CISDA 2009): KDDTrain+.txt,
KDDTest+.txt and their variants.

No header; each row holds the 41 KDD Cup 99 features, the label and (in the "+" files) a difficulty score, which is
dropped. protocol_type, service and flag are categorical, expanded one-hot over their fixed KDD vocabularies. Labels
keep the attack names by default; ``families=True`` maps them to the four KDD families (DoS, Probe, R2L, U2R) with
the mapping of the KDD Cup 99 task description, extended to the new attacks of the NSL-KDD test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bastion.errors import InvalidInputError
from bastion.ids.features import BENIGN
from bastion.ids.formats.csvfile import read_cells
from bastion.ids.formats.table import Parsed, normalise_label

COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent",
    "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login",
    "count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate", "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
PROTOCOL_TYPES = ("icmp", "tcp", "udp")
FLAGS = ("OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH")
SERVICES = (
    "IRC", "X11", "Z39_50", "aol", "auth", "bgp", "courier", "csnet_ns", "ctf", "daytime", "discard", "domain",
    "domain_u", "echo", "eco_i", "ecr_i", "efs", "exec", "finger", "ftp", "ftp_data", "gopher", "harvest",
    "hostnames", "http", "http_2784", "http_443", "http_8001", "imap4", "iso_tsap", "klogin", "kshell", "ldap",
    "link", "login", "mtp", "name", "netbios_dgm", "netbios_ns", "netbios_ssn", "netstat", "nnsp", "nntp", "ntp_u",
    "other", "pm_dump", "pop_2", "pop_3", "printer", "private", "red_i", "remote_job", "rje", "shell", "smtp",
    "sql_net", "ssh", "sunrpc", "supdup", "systat", "telnet", "tftp_u", "tim_i", "time", "urh_i", "urp_i", "uucp",
    "uucp_path", "vmnet", "whois",
)
FAMILIES: dict[str, tuple[str, ...]] = {
    "DoS": ("apache2", "back", "land", "mailbomb", "neptune", "pod", "processtable", "smurf", "teardrop",
            "udpstorm"),
    "Probe": ("ipsweep", "mscan", "nmap", "portsweep", "saint", "satan"),
    "R2L": ("ftp_write", "guess_passwd", "httptunnel", "imap", "multihop", "named", "phf", "sendmail",
            "snmpgetattack", "snmpguess", "spy", "warezclient", "warezmaster", "worm", "xlock", "xsnoop"),
    "U2R": ("buffer_overflow", "loadmodule", "perl", "ps", "rootkit", "sqlattack", "xterm"),
}
FAMILY_OF = {attack: family for family, attacks in FAMILIES.items() for attack in attacks}


def looks_like(line: str) -> bool:
    """A header-less row of 42 or 43 fields whose second is a KDD protocol type."""
    fields = [f.strip() for f in line.split(",")]
    return len(fields) in (41, 42, 43) and fields[1] in PROTOCOL_TYPES


def to_families(path: Path, labels: np.ndarray) -> np.ndarray:
    unknown = sorted({v for v in labels.tolist() if v != BENIGN and v not in FAMILY_OF})
    if unknown:
        raise InvalidInputError(f"{path}: attack name(s) {', '.join(unknown)} belong to no KDD family; pass "
                                "families=False to keep the names.")
    return np.array([v if v == BENIGN else FAMILY_OF[v] for v in labels.tolist()], dtype=object)


def read_nsl_kdd(path: Path, *, families: bool = False) -> Parsed:
    """NSL-KDD rows (see the module docstring)."""
    cells = read_cells(path, header=False)
    width = cells.frame.shape[1]
    if width == len(COLUMNS):
        raise InvalidInputError(f"{path}: rows have the 41 NSL-KDD features but no label column; use the labelled "
                                "KDDTrain+/KDDTest+ files.")
    if width not in (len(COLUMNS) + 1, len(COLUMNS) + 2):
        raise InvalidInputError(f"{path}: rows have {width} fields, not the 42 or 43 of NSL-KDD (41 features, "
                                "label, difficulty); pass the right format= or fix the file.")
    frame = cells.frame.iloc[:, : len(COLUMNS)].copy()
    frame.columns = list(COLUMNS)
    labels = np.array([normalise_label(str(v).strip().rstrip(".")) for v in cells.frame[len(COLUMNS)]],
                      dtype=object)
    if families:
        labels = to_families(path, labels)
    return Parsed(frame, labels, cells.lines, COLUMNS, "nsl-kdd",
                  categorical={"protocol_type": PROTOCOL_TYPES, "service": SERVICES, "flag": FLAGS},
                  onehot=("protocol_type", "service", "flag"))
