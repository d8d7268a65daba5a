"""UNSW-NB15 (Moustafa & Slay, MilCIS 2015): the partitioned UNSW_NB15_training-set.csv / testing-set.csv.

A header: id, 42 features, attack_cat, label. ``id`` is dropped; the class is ``attack_cat`` (its "Normal" is
``BENIGN``; ``label`` is its binary form and is dropped). proto, service and state are categorical, one-hot over the
values found in the file unless ``categories=`` gives them (pass the training table's ``categorical`` when loading
the testing set, so both have the same columns); service "-" (none identified) is a value like the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bastion.errors import InvalidInputError
from bastion.ids.formats.csvfile import read_cells
from bastion.ids.formats.table import Parsed, normalise_label

COLUMNS: tuple[str, ...] = (
    "dur", "proto", "service", "state", "spkts", "dpkts", "sbytes", "dbytes", "rate", "sttl", "dttl", "sload",
    "dload", "sloss", "dloss", "sinpkt", "dinpkt", "sjit", "djit", "swin", "stcpb", "dtcpb", "dwin", "tcprtt",
    "synack", "ackdat", "smean", "dmean", "trans_depth", "response_body_len", "ct_srv_src", "ct_state_ttl",
    "ct_dst_ltm", "ct_src_dport_ltm", "ct_dst_sport_ltm", "ct_dst_src_ltm", "is_ftp_login", "ct_ftp_cmd",
    "ct_flw_http_mthd", "ct_src_ltm", "ct_srv_dst", "is_sm_ips_ports",
)
CATEGORICAL = ("proto", "service", "state")


def read_unsw_nb15(path: Path) -> Parsed:
    """UNSW-NB15 rows (see the module docstring)."""
    cells = read_cells(path, header=True)
    if "attack_cat" not in cells.header:
        raise InvalidInputError(f"{path}: no 'attack_cat' column, so the flows have no class; use the labelled "
                                "UNSW_NB15_training-set.csv / testing-set.csv files.")
    labels = np.array([normalise_label(v) for v in cells.frame["attack_cat"].tolist()], dtype=object)
    columns = [c for c in cells.header if c not in ("id", "attack_cat", "label")]
    return Parsed(cells.frame[columns], labels, cells.lines, COLUMNS, "unsw-nb15",
                  categorical=dict.fromkeys(CATEGORICAL), onehot=CATEGORICAL)
