"""CICFlowMeter CSV files: CIC-IDS2017, CSE-CIC-IDS2018, and bastion's own snapshot/generator files.

- CIC-IDS2017 (Sharafaldin et al., ICISSP 2018), the "MachineLearningCSV" files: names with leading spaces, a
  ``Label`` column, "Infinity"/"NaN" in Flow Bytes/s and Flow Packets/s, "Fwd Header Length" twice, no Protocol;
  the "GeneratedLabelledFlows" files add Flow ID, Source/Destination IP, Source Port, Protocol and Timestamp.
- CSE-CIC-IDS2018 ("Processed Traffic Data for ML Algorithms", *_TrafficForML_CICFlowMeter.csv): abbreviated
  names, header rows repeated inside the files; one file (Thuesday-20-02-2018) adds Flow ID, Src IP, Src Port,
  Dst IP. The header list is the one the CIC publishes in those files, as listed in the README of
  github.com/viktor53/diploma-thesis (looked up with bastion's ``search`` tool); each name maps to its 2017 name.
- bastion's snapshot: exactly ``FEATURE_NAMES``, then the metadata Source IP, Destination IP, Source Port,
  Timestamp, then ``Label``.

Identifying columns (IPs, source port, flow id, timestamp) are dropped: they name a host, not a behaviour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bastion.errors import InvalidInputError
from bastion.ids.features import FEATURE_NAMES, LABEL, PROTOCOLS
from bastion.ids.formats.csvfile import Cells, read_cells
from bastion.ids.formats.table import Parsed, normalise_label

METADATA = frozenset({"Flow ID", "Source IP", "Destination IP", "Source Port", "Timestamp", "Src IP", "Dst IP",
                      "Src Port"})
BASTION_METADATA = ("Source IP", "Destination IP", "Source Port", "Timestamp")

_STATS = ("Max", "Min", "Mean", "Std")
CIC2018_NAMES: dict[str, str] = {
    "Dst Port": "Destination Port", "Tot Fwd Pkts": "Total Fwd Packets", "Tot Bwd Pkts": "Total Backward Packets",
    "TotLen Fwd Pkts": "Total Length of Fwd Packets", "TotLen Bwd Pkts": "Total Length of Bwd Packets",
    **{f"Fwd Pkt Len {s}": f"Fwd Packet Length {s}" for s in _STATS},
    **{f"Bwd Pkt Len {s}": f"Bwd Packet Length {s}" for s in _STATS},
    "Flow Byts/s": "Flow Bytes/s", "Flow Pkts/s": "Flow Packets/s", "Fwd IAT Tot": "Fwd IAT Total",
    "Bwd IAT Tot": "Bwd IAT Total", "Fwd Header Len": "Fwd Header Length", "Bwd Header Len": "Bwd Header Length",
    "Fwd Pkts/s": "Fwd Packets/s", "Bwd Pkts/s": "Bwd Packets/s", "Pkt Len Min": "Min Packet Length",
    "Pkt Len Max": "Max Packet Length", "Pkt Len Mean": "Packet Length Mean", "Pkt Len Std": "Packet Length Std",
    "Pkt Len Var": "Packet Length Variance",
    **{f"{f} Flag Cnt": f"{f} Flag Count" for f in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWE", "ECE")},
    "Pkt Size Avg": "Average Packet Size", "Fwd Seg Size Avg": "Avg Fwd Segment Size",
    "Bwd Seg Size Avg": "Avg Bwd Segment Size", "Fwd Byts/b Avg": "Fwd Avg Bytes/Bulk",
    "Fwd Pkts/b Avg": "Fwd Avg Packets/Bulk", "Fwd Blk Rate Avg": "Fwd Avg Bulk Rate",
    "Bwd Byts/b Avg": "Bwd Avg Bytes/Bulk", "Bwd Pkts/b Avg": "Bwd Avg Packets/Bulk",
    "Bwd Blk Rate Avg": "Bwd Avg Bulk Rate", "Subflow Fwd Pkts": "Subflow Fwd Packets",
    "Subflow Fwd Byts": "Subflow Fwd Bytes", "Subflow Bwd Pkts": "Subflow Bwd Packets",
    "Subflow Bwd Byts": "Subflow Bwd Bytes", "Init Fwd Win Byts": "Init_Win_bytes_forward",
    "Init Bwd Win Byts": "Init_Win_bytes_backward", "Fwd Act Data Pkts": "act_data_pkt_fwd",
    "Fwd Seg Size Min": "min_seg_size_forward",
}
PROTOCOL_VALUES = tuple(float(p) for p in sorted(PROTOCOLS))


def _labelled(path: Path, cells: Cells, name: str) -> tuple[np.ndarray, list[str]]:
    if LABEL not in cells.header:
        raise InvalidInputError(f"{path}: no {LABEL!r} column, so the flows have no labels; use the labelled "
                                f"{name} files (their last column is {LABEL}).")
    labels = np.array([normalise_label(v) for v in cells.frame[LABEL].tolist()], dtype=object)
    return labels, [c for c in cells.header if c != LABEL and c not in METADATA]


def _parsed(path: Path, cells: Cells, name: str, fmt: str, optional: frozenset[str] = frozenset()) -> Parsed:
    labels, columns = _labelled(path, cells, name)
    return Parsed(cells.frame[columns], labels, cells.lines, FEATURE_NAMES, fmt, optional,
                  {"Protocol": PROTOCOL_VALUES})


def read_cic2017(path: Path) -> Parsed:
    """CIC-IDS2017 (MachineLearningCSV lacks Protocol, which is then optional; GeneratedLabelledFlows has it)."""
    return _parsed(path, read_cells(path, header=True), "CIC-IDS2017", "cic2017", frozenset({"Protocol"}))


def read_cic2018(path: Path) -> Parsed:
    """CSE-CIC-IDS2018, its abbreviated names mapped to CIC-IDS2017's."""
    cells = read_cells(path, header=True)
    cells.frame.columns = [CIC2018_NAMES.get(c, c) for c in cells.header]
    cells.header = list(cells.frame.columns)
    return _parsed(path, cells, "CSE-CIC-IDS2018", "cic2018")


def read_bastion(path: Path) -> Parsed:
    """bastion's own snapshot or generator CSV."""
    return _parsed(path, read_cells(path, header=True), "bastion snapshot", "bastion")


def is_bastion(raw: list[str]) -> bool:
    """A header bastion's generator wrote: its names exactly, untrimmed, Protocol included."""
    known = set(FEATURE_NAMES) | set(BASTION_METADATA) | {LABEL}
    return "Protocol" in raw and all(r == r.strip() and r in known for r in raw)
