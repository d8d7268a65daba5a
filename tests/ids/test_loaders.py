"""The IDS loaders on small files written in each real format (tests/fixtures/ids/, real headers verbatim, real
rows where the formats' documentation shows them): values round-trip, quirks are handled, bad input is one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bastion.errors import InvalidInputError
from bastion.ids.features import BENIGN, FEATURE_NAMES
from bastion.ids.formats.cic import CIC2018_NAMES
from bastion.ids.loaders import detect_format, load_flows

FIX = Path(__file__).parents[1] / "fixtures" / "ids"
CIC17 = FIX / "cic2017-machinelearningcsv.csv"
CIC17G = FIX / "cic2017-generatedlabelledflows.csv"
CIC18 = FIX / "cic2018-trafficforml.csv"
SNAP = FIX / "bastion-snapshot.csv"
KDD = FIX / "nsl-kdd-KDDTrain+.txt"
UNSW = FIX / "unsw-nb15-training-set.csv"


def _rows(path: Path, *, header: bool = True) -> tuple[list[str], list[list[str]]]:
    """The file read independently (the csv module): header stripped, data rows, repeated headers dropped."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    rows = [r for r in csv.reader(text.splitlines()) if r]
    if not header:
        return [], rows
    header = [h.strip() for h in rows[0]]
    return header, [r for r in rows[1:] if r != rows[0]]


@pytest.mark.parametrize(("path", "fmt"), [(CIC17, "cic2017"), (CIC17G, "cic2017"), (CIC18, "cic2018"),
                                            (SNAP, "bastion"), (KDD, "nsl-kdd"), (UNSW, "unsw-nb15")])
def test_format_is_detected_from_the_first_line(path: Path, fmt: str) -> None:
    assert detect_format(path) == fmt


@pytest.mark.parametrize(("path", "rename"), [(CIC17G, {}), (CIC18, CIC2018_NAMES), (SNAP, {})])
def test_cic_values_round_trip(path: Path, rename: dict[str, str]) -> None:
    table = load_flows(path, extra="drop")
    header, rows = _rows(path)
    header = [rename.get(h, h) for h in header]
    assert table.columns == FEATURE_NAMES and table.features.dtype == np.float64
    for i, row in enumerate(rows):
        for j, name in enumerate(table.columns):
            assert table.features[i, j] == float(row[header.index(name)]), (i, name)
    raw_labels = [r[header.index("Label")].strip() for r in rows]
    assert [BENIGN if v.lower() == "benign" else v for v in raw_labels] == table.labels.tolist()


def test_cic2017_quirks_and_options() -> None:
    """Leading spaces, no Protocol, Infinity/NaN, the cp1252 and U+FFFD dashes, the duplicated header column."""
    table = load_flows(CIC17, extra="drop", nonfinite="drop")
    assert table.columns == tuple(n for n in FEATURE_NAMES if n != "Protocol")
    assert table.classes == (BENIGN, "DDoS", "PortScan", "Web Attack - Brute Force", "Web Attack - XSS")
    assert len(table) == 6 and table.categorical == {}
    first = dict(zip(table.columns, table.features[0], strict=True))  # the real first row of Wednesday's file
    assert (first["Destination Port"], first["Flow Duration"], first["Flow Bytes/s"]) == (80, 38308, 313.250496)
    zeroed = load_flows(CIC17, extra="drop", nonfinite="zero")
    assert len(zeroed) == 8 and zeroed.features[4:6, table.columns.index("Flow Bytes/s")].tolist() == [0.0, 0.0]
    kept = load_flows(CIC17, extra="keep", nonfinite="drop")
    assert kept.columns[:51] == table.columns and kept.columns.count("Fwd Header Length") == 1
    assert kept.features[0, kept.columns.index("Init_Win_bytes_forward")] == 255


def test_labels_classes_and_indices() -> None:
    table = load_flows(CIC18, extra="drop")
    assert table.classes[0] == BENIGN and list(table.classes[1:]) == sorted(table.classes[1:])
    assert table.binary_labels().tolist() == [0, 1, 1, 1, 1]
    assert [table.classes[i] for i in table.class_index()] == table.labels.tolist()
    assert table.categorical == {"Protocol": (1.0, 6.0, 17.0)} and table.groups == ()


def test_nsl_kdd_one_hot_and_families() -> None:
    table = load_flows(KDD)
    _, rows = _rows(KDD, header=False)
    assert len(table.groups) == 3 and [len(g) for g in table.groups] == [3, 70, 11]
    assert table.features.shape == (6, 41 - 3 + 3 + 70 + 11)
    for group, column in zip(table.groups, ("protocol_type", "service", "flag"), strict=True):
        block = table.features[:, list(group)]
        assert (block.sum(axis=1) == 1).all()
        chosen = [table.columns[group[k]] for k in block.argmax(axis=1)]
        idx = ("protocol_type", "service", "flag").index(column) + 1
        assert chosen == [f"{column}={r[idx]}" for r in rows]
    assert table.features[:, table.columns.index("src_bytes")].tolist() == [float(r[4]) for r in rows]
    assert table.labels.tolist() == [BENIGN, BENIGN, "neptune", "ipsweep", "guess_passwd", "buffer_overflow"]
    families = load_flows(KDD, families=True)
    assert families.labels.tolist() == [BENIGN, BENIGN, "DoS", "Probe", "R2L", "U2R"]


def test_unsw_categories_from_the_data_or_given() -> None:
    table = load_flows(UNSW)
    assert table.categorical["service"] == ("-", "dns", "http") and "service=-" in table.columns
    assert table.labels.tolist() == [BENIGN, BENIGN, "Generic", "Reconnaissance", "Exploits"]
    assert "id" not in table.columns and "label" not in table.columns
    wide = load_flows(UNSW, categories={"proto": ("arp", "tcp", "udp", "ospf")})
    assert wide.categorical["proto"] == ("arp", "tcp", "udp", "ospf")
    assert wide.features[:, wide.columns.index("proto=ospf")].sum() == 0
    with pytest.raises(InvalidInputError, match=r"unknown value.*'arp'.*unknown='drop'"):
        load_flows(UNSW, categories={"proto": ("tcp", "udp")})
    assert len(load_flows(UNSW, categories={"proto": ("tcp", "udp")}, unknown="drop")) == 4


def _edit(tmp: Path, src: Path, change) -> Path:
    out = tmp / src.name
    out.write_bytes(change(src.read_bytes()))
    return out


def _drop_column(name: str):
    def change(data: bytes) -> bytes:
        rows = list(csv.reader(data.decode().splitlines()))
        j = [h.strip() for h in rows[0]].index(name)
        return "\n".join(",".join(r[:j] + r[j + 1:]) for r in rows).encode()
    return change


def _add_column(data: bytes) -> bytes:
    lines = data.decode().splitlines()
    return "\n".join([lines[0] + ",Color"] + [line + ",red" for line in lines[1:]]).encode()


BAD = [
    ("missing columns", SNAP, _drop_column("Flow IAT Std"), {}, r"missing column\(s\) Flow IAT Std .*missing='ignore'"),
    ("extra columns", SNAP, _add_column, {}, r"1 column\(s\) outside .*: Color; pass extra='drop'"),
    ("NaN and inf", CIC17, lambda d: d, {"extra": "drop"},
     r"'Flow Bytes/s' in 2 row\(s\), 'Flow Packets/s' in 2 row\(s\) \(first on line\(s\) 6, 7\); "
     r"pass nonfinite='drop'"),
    ("unknown protocol", CIC18, lambda d: d.replace(b"53,17,", b"53,0,"), {"extra": "drop"},
     r"'Protocol' has 1 row\(s\) with unknown value\(s\) 0\.0 \(lines 6;.*unknown='drop'"),
    ("unknown service", KDD, lambda d: d.replace(b"ftp_data", b"gopher2"), {}, r"'gopher2'.*unknown='drop'"),
    ("empty file", SNAP, lambda d: b"", {}, r"is empty"),
    ("header only", SNAP, lambda d: d.splitlines()[0], {}, r"has a header but no data rows"),
    ("no label column", CIC18, _drop_column("Label"), {}, r"no 'Label' column"),
    ("no attack_cat", UNSW, _drop_column("attack_cat"), {}, r"no 'attack_cat' column"),
    ("KDD without label", KDD, lambda d: b"\n".join(b",".join(r.split(b",")[:41]) for r in d.splitlines()), {},
     r"41 NSL-KDD features but no label"),
    ("text in a number", SNAP, lambda d: d.replace(b"\n80,", b"\neighty,", 1).replace(b"\n81,", b"\neighty,", 1), {},
     r"'Destination Port' has text that is not a number \('eighty' on line\(s\) 2"),
    ("unknown format", SNAP, lambda d: b"a,b\n1,2\n", {}, r"cannot tell the format.*pass format="),
    ("categories for no such column", UNSW, lambda d: d, {"categories": {"protocol": ("tcp",)}},
     r"categories= names 'protocol', not a categorical column of unsw-nb15 \(proto, service, state\)"),
    ("bad option", SNAP, lambda d: d, {"nonfinite": "mean"}, r"nonfinite='mean' is not one of"),
    ("families on CIC", SNAP, lambda d: d, {"families": True}, r"families=True applies to NSL-KDD"),
    ("unknown KDD attack family", KDD, lambda d: d.replace(b"neptune", b"zeroday"), {"families": True},
     r"zeroday belong to no KDD family"),
    ("duplicated column that differs", SNAP, lambda d: d.replace(b"Flow IAT Std,", b"Flow IAT Min,", 1), {},
     r"'Flow IAT Min' appears twice with different values"),
]


@pytest.mark.parametrize(("name", "src", "change", "kwargs", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_line(name: str, src: Path, change, kwargs: dict, message: str,
                                     tmp_path: Path) -> None:
    path = _edit(tmp_path, src, change)
    before = path.read_bytes()
    with pytest.raises(InvalidInputError, match=message) as err:
        load_flows(path, **kwargs)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before  # nothing is modified on disk


def test_missing_path_and_missing_ignore(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="is not a file"):
        load_flows(tmp_path / "nope.csv")
    path = _edit(tmp_path, SNAP, _drop_column("Flow IAT Std"))
    table = load_flows(path, missing="ignore")
    assert "Flow IAT Std" not in table.columns and len(table.columns) == 51
