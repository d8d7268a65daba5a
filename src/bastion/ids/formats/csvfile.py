"""Reading a CSV file as text cells, with the quirks of the public IDS files handled once.

Every cell is read as text (so a mistyped cell is reported, not guessed), bytes that are not UTF-8 are replaced
(CIC-IDS2017's web-attack labels hold a cp1252 dash), blank rows are skipped, a header repeated inside the file
(CSE-CIC-IDS2018) is dropped, and a column that appears twice with the same values (CIC-IDS2017's
"Fwd Header Length") is kept once. Files are only read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bastion.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass
class Cells:
    """A file's header (spaces trimmed, as written: ``raw``), its rows as text and each row's line number."""

    header: list[str]
    raw: list[str]
    frame: pd.DataFrame
    lines: np.ndarray


def first_line(path: Path) -> str:
    """The file's first non-blank line ('' for an empty file)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.rstrip("\r\n")
    except OSError as exc:
        raise InvalidInputError(f"{path} cannot be read ({exc.strerror}); check the path.") from None
    return ""


def read_cells(path: Path, *, header: bool) -> Cells:
    """The file as text cells; with ``header`` its first row names the columns (see the module docstring)."""
    try:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False,
                            encoding="utf-8", encoding_errors="replace", low_memory=False)
    except pd.errors.EmptyDataError:
        raise InvalidInputError(f"{path} is empty; give a CSV file with a header and flows.") from None
    except pd.errors.ParserError as exc:
        raise InvalidInputError(f"{path} is not a well-formed CSV file ({str(exc).strip()}); fix that row.") from None
    lines = np.arange(1, len(frame) + 1)
    blank = (frame.isna() | frame.eq("")).all(axis=1).to_numpy()
    frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    if not header:
        return Cells([], [], frame, lines)
    if len(frame) == 0:
        raise InvalidInputError(f"{path} is empty; give a CSV file with a header and flows.")
    raw = [str(v) for v in frame.iloc[0]]
    frame, lines = frame.iloc[1:].reset_index(drop=True), lines[1:]
    repeated = (frame == raw).all(axis=1).to_numpy()
    if repeated.any():
        log.info("%s: skipped %d repeated header row(s)", path, int(repeated.sum()))
        frame, lines = frame[~repeated].reset_index(drop=True), lines[~repeated]
    names = [r.strip() for r in raw]
    frame = _unique_columns(path, frame, names)
    return Cells(list(frame.columns), raw, frame, lines)


def _unique_columns(path: Path, frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    first: dict[str, int] = {}
    keep: list[int] = []
    for i, name in enumerate(names):
        if name not in first:
            first[name] = i
            keep.append(i)
        elif not frame[i].equals(frame[first[name]]):
            raise InvalidInputError(f"{path}: column {name!r} appears twice with different values; remove one of "
                                    "them from the header and the rows.")
    out = frame[keep]
    out.columns = [names[i] for i in keep]
    return out
