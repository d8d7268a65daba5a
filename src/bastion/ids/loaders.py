"""Load labelled flows from the IDS formats users already have, as a ``FlowTable`` in raw units.

Formats (``format=``): ``cic2017`` (CIC-IDS2017 CSV), ``cic2018`` (CSE-CIC-IDS2018 CSV), ``bastion`` (the
snapshot and ``bastion ids generate`` CSV), ``nsl-kdd`` (KDDTrain+.txt / KDDTest+.txt) and ``unsw-nb15`` (the
UNSW-NB15 training/testing-set CSV); ``auto`` (the default) tells them apart by the first line. The CIC formats and
bastion's keep the columns of ``bastion.ids.features.FEATURE_NAMES`` they have; NSL-KDD and UNSW-NB15 keep their
own features, categorical ones expanded one-hot. See ``bastion.ids.formats`` for each format's details.

Options, each an error by default so nothing is changed without being asked:
- ``nonfinite``: NaN, infinite or empty numbers (real CIC files have them): ``'error'``, ``'drop'`` the rows or
  ``'zero'`` them.
- ``extra``: columns outside the layout: ``'error'``, ``'drop'`` them, or ``'keep'`` them after the layout.
- ``missing``: layout columns the file lacks: ``'error'`` or ``'ignore'``.
- ``unknown``: categorical values outside the allowed ones: ``'error'`` or ``'drop'`` the rows;
  ``categories`` (column -> values) sets the allowed values, e.g. a training table's ``categorical``.
- ``families`` (NSL-KDD only): attack names mapped to DoS/Probe/R2L/U2R.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bastion.errors import InvalidInputError
from bastion.ids.formats import cic, kdd, unsw
from bastion.ids.formats.csvfile import first_line
from bastion.ids.formats.table import FlowTable, Options, Parsed, finish

READERS: dict[str, Callable[[Path], Parsed]] = {
    "cic2017": cic.read_cic2017, "cic2018": cic.read_cic2018, "bastion": cic.read_bastion,
    "nsl-kdd": kdd.read_nsl_kdd, "unsw-nb15": unsw.read_unsw_nb15,
}
FORMATS: tuple[str, ...] = tuple(READERS)


def detect_format(path: str | Path) -> str:
    """The format of ``path``, from its first line (see the module docstring)."""
    path = Path(path)
    line = first_line(path)
    if not line:
        raise InvalidInputError(f"{path} is empty; give a CSV file with a header and flows.")
    raw = next(csv.reader([line]))
    names = {r.strip() for r in raw}
    if "attack_cat" in names or {"sbytes", "dbytes", "sttl"} <= names:
        return "unsw-nb15"
    if "Tot Fwd Pkts" in names:
        return "cic2018"
    if "Total Fwd Packets" in names:
        return "bastion" if cic.is_bastion(raw) else "cic2017"
    if kdd.looks_like(line):
        return "nsl-kdd"
    raise InvalidInputError(f"cannot tell the format of {path} from its first line; pass format= one of "
                            f"{', '.join(FORMATS)}.")


def load_flows(path: str | Path, *, format: str = "auto", nonfinite: str = "error", extra: str = "error",
               missing: str = "error", unknown: str = "error", categories: Mapping[str, Sequence] | None = None,
               families: bool = False) -> FlowTable:
    """Read labelled flows from ``path`` (see the module docstring for formats and options)."""
    path = Path(path)
    options = Options(nonfinite, extra, missing, unknown, categories)
    options.check()
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file; check the path.")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in READERS:
        raise InvalidInputError(f"format={format!r} is not one of auto, {', '.join(FORMATS)}; pass one of them.")
    if families and fmt != "nsl-kdd":
        raise InvalidInputError(f"families=True applies to NSL-KDD files only, and {path} is {fmt}; leave it out.")
    parsed = kdd.read_nsl_kdd(path, families=True) if families else READERS[fmt](path)
    return finish(parsed, path, options)


__all__ = ["FORMATS", "FlowTable", "detect_format", "load_flows"]
