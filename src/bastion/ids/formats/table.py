"""The table every IDS loader returns, and the checks every format shares (columns, values, labels).

A reader turns a file into a ``Parsed``: text cells under bastion's column names, the labels, and what its format
expects. ``finish`` checks it (missing and extra columns, unknown categorical values, text that is not a number,
NaN and infinite values) and builds the ``FlowTable``. Each problem is one ``InvalidInputError`` line that names the
option or the edit that fixes it. Files are only read, never written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bastion.errors import InvalidInputError
from bastion.ids.features import BENIGN

log = logging.getLogger(__name__)

NONFINITE = ("error", "drop", "zero")
EXTRA = ("error", "drop", "keep")
MISSING = ("error", "ignore")
UNKNOWN = ("error", "drop")


@dataclass(frozen=True)
class FlowTable:
    """Flows as a feature matrix in raw units, with their labels.

    ``features`` is float64 ``(N, D)``; ``columns`` names its D columns (one-hot columns are ``name=value``);
    ``labels`` holds class names (the benign class is always ``BENIGN``, whatever the file calls it);
    ``classes`` lists them sorted, ``BENIGN`` first; ``groups`` holds the column indices of each one-hot group;
    ``categorical`` maps each categorical column of the file to its allowed values (one-hot or not);
    ``format`` is the reader that made it.
    """

    features: np.ndarray
    columns: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...] = ()
    categorical: dict[str, tuple] = field(default_factory=dict)
    format: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def binary_labels(self) -> np.ndarray:
        """0 for benign flows, 1 for attacks (int64)."""
        return (self.labels != BENIGN).astype(np.int64)

    def class_index(self) -> np.ndarray:
        """Each flow's class as its index in ``classes`` (int64)."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.fromiter((lookup[v] for v in self.labels), dtype=np.int64, count=len(self.labels))


@dataclass
class Parsed:
    """A file as a reader saw it, before the shared checks.

    ``frame``: text cells, columns renamed to bastion's names, the label column removed; ``lines``: each row's line
    in the file; ``expected``: the layout's columns in order; ``optional``: those a valid file may lack;
    ``categorical``: column -> allowed values (``None``: the values found, sorted); ``onehot``: the categorical
    columns expanded into one-hot groups (the others stay one numeric column).
    """

    frame: pd.DataFrame
    labels: np.ndarray
    lines: np.ndarray
    expected: tuple[str, ...]
    format: str
    optional: frozenset[str] = frozenset()
    categorical: dict[str, tuple | None] = field(default_factory=dict)
    onehot: tuple[str, ...] = ()


@dataclass(frozen=True)
class Options:
    nonfinite: str = "error"
    extra: str = "error"
    missing: str = "error"
    unknown: str = "error"
    categories: Mapping[str, Sequence] | None = None

    def check(self) -> None:
        for name, allowed in (("nonfinite", NONFINITE), ("extra", EXTRA), ("missing", MISSING),
                              ("unknown", UNKNOWN)):
            if getattr(self, name) not in allowed:
                raise InvalidInputError(f"{name}={getattr(self, name)!r} is not one of "
                                        f"{', '.join(map(repr, allowed))}; pass one of them.")


def normalise_label(text: str) -> str:
    """A label with spaces trimmed, the mis-encoded dash of CIC-IDS2017's web attacks made '-', benign as BENIGN."""
    text = " ".join(str(text).replace("\ufffd", "-").replace("\x96", "-").replace("\u2013", "-").split())
    return BENIGN if text.lower() in ("benign", "normal") else text


def _layout(parsed: Parsed, path: Path, opts: Options) -> list[str]:
    present = list(parsed.frame.columns)
    known = set(parsed.expected)
    extra = [c for c in dict.fromkeys(present) if c not in known]
    if extra and opts.extra == "error":
        raise InvalidInputError(
            f"{path}: {len(extra)} column(s) outside bastion's {parsed.format} layout: {', '.join(extra)}; pass "
            "extra='drop' to leave them out or extra='keep' to keep them after the layout's columns.")
    missing = [c for c in parsed.expected if c not in present and c not in parsed.optional]
    if missing and opts.missing == "error":
        raise InvalidInputError(
            f"{path}: missing column(s) {', '.join(missing)} of the {parsed.format} layout; use a complete export "
            "of the file, or pass missing='ignore' to load the columns it has.")
    order = [c for c in parsed.expected if c in present]
    return order + (extra if opts.extra == "keep" else [])


def _lines(parsed: Parsed, mask: np.ndarray, limit: int = 3) -> str:
    return ", ".join(str(int(n)) for n in parsed.lines[mask][:limit])


def _allowed(parsed: Parsed, column: str, values: np.ndarray, opts: Options) -> tuple:
    given = (opts.categories or {}).get(column)
    if given is not None:
        allowed = tuple(given)
    elif parsed.categorical.get(column) is not None:
        allowed = tuple(parsed.categorical[column])  # type: ignore[arg-type]
    else:
        allowed = tuple(sorted(set(values.tolist())))
    return allowed


def _categorical(parsed: Parsed, path: Path, column: str, opts: Options) -> tuple[np.ndarray, tuple, np.ndarray]:
    """(values, allowed values, rows with an allowed value) of one categorical column."""
    text = parsed.frame[column].to_numpy(dtype=str)
    values: np.ndarray = np.char.strip(text)
    if column not in parsed.onehot:  # a numeric code such as the IP protocol number
        values = _numbers(parsed, path, column, values)
    allowed = _allowed(parsed, column, values, opts)
    ok = np.isin(values, _like(allowed, values))
    if not ok.all() and opts.unknown == "error":
        bad = sorted(set(values[~ok].tolist()))
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in bad[:5])
        raise InvalidInputError(
            f"{path}: column {column!r} has {int((~ok).sum())} row(s) with unknown value(s) {shown} (lines "
            f"{_lines(parsed, ~ok)}; allowed: {', '.join(map(str, allowed))}); pass unknown='drop' to drop those "
            "rows, or categories={...} to widen the allowed values.")
    return values, allowed, ok


def _numbers(parsed: Parsed, path: Path, column: str, text: np.ndarray) -> np.ndarray:
    cells = np.char.strip(np.asarray(text, dtype=str))
    cells = np.where(cells == "", "nan", cells)
    try:
        return cells.astype(np.float64)
    except ValueError:
        bad = np.array([not _is_number(c) for c in cells])
        raise InvalidInputError(
            f"{path}: column {column!r} has text that is not a number ({str(cells[bad][0])!r} on line(s) "
            f"{_lines(parsed, bad)}); fix or remove those rows.") from None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _nonfinite(parsed: Parsed, path: Path, names: list[str], matrix: np.ndarray, opts: Options) -> np.ndarray:
    """Rows to keep; ``matrix`` has its non-finite cells set to 0 under nonfinite='zero'."""
    bad = ~np.isfinite(matrix)
    if not bad.any():
        return np.ones(len(matrix), dtype=bool)
    if opts.nonfinite == "error":
        per = [f"{names[j]!r} in {int(bad[:, j].sum())} row(s)" for j in np.flatnonzero(bad.any(axis=0))]
        raise InvalidInputError(
            f"{path}: NaN, infinite or empty values in {', '.join(per)} (first on line(s) "
            f"{_lines(parsed, bad.any(axis=1))}); pass nonfinite='drop' to drop those rows or 'zero' to set them to 0.")
    if opts.nonfinite == "zero":
        matrix[bad] = 0.0
        return np.ones(len(matrix), dtype=bool)
    return ~bad.any(axis=1)


def _like(allowed: tuple, values: np.ndarray) -> np.ndarray:
    """``allowed`` as text when the values are text, else as numbers (never truncated to the values' width)."""
    if values.dtype.kind == "U":
        return np.array([str(a) for a in allowed], dtype=str)
    return np.asarray(allowed, dtype=np.float64)


def _onehot(values: np.ndarray, allowed: tuple) -> np.ndarray:
    return (values[:, None] == _like(allowed, values)[None, :]).astype(np.float64)


def finish(parsed: Parsed, path: Path, opts: Options) -> FlowTable:
    """The shared checks, then the table (see the module docstring)."""
    if len(parsed.frame) == 0:
        raise InvalidInputError(f"{path}: the file has a header but no data rows; give a file with flows in it.")
    stray = sorted(set(opts.categories or {}) - set(parsed.categorical))
    if stray:
        raise InvalidInputError(f"{path}: categories= names {', '.join(map(repr, stray))}, not a categorical column "
                                f"of {parsed.format} ({', '.join(parsed.categorical) or 'it has none'}); fix the "
                                "column names.")
    order = _layout(parsed, path, opts)
    keep = np.ones(len(parsed.frame), dtype=bool)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    groups: list[tuple[int, ...]] = []
    categorical: dict[str, tuple] = {}
    numeric: list[int] = []
    for column in order:
        if column in parsed.categorical:
            values, allowed, ok = _categorical(parsed, path, column, opts)
            keep &= ok
            categorical[column] = allowed
            if column in parsed.onehot:
                groups.append(tuple(range(len(names), len(names) + len(allowed))))
                blocks.append(_onehot(values, allowed))
                names += [f"{column}={v}" for v in allowed]
                continue
            block = values[:, None]
        else:
            block = _numbers(parsed, path, column, parsed.frame[column].to_numpy(dtype=str))[:, None]
            numeric.append(len(names))
        blocks.append(block)
        names.append(column)
    matrix = np.concatenate(blocks, axis=1)
    keep &= _nonfinite(parsed, path, [names[j] for j in numeric], matrix[:, numeric], opts)
    if opts.nonfinite == "zero":
        matrix[:, numeric] = np.where(np.isfinite(matrix[:, numeric]), matrix[:, numeric], 0.0)
    return _table(parsed, path, matrix[keep], names, groups, categorical, keep)


def _table(parsed: Parsed, path: Path, matrix: np.ndarray, names: list[str], groups: list[tuple[int, ...]],
           categorical: dict[str, tuple], keep: np.ndarray) -> FlowTable:
    if not keep.all():
        log.info("%s: dropped %d of %d rows (unknown or non-finite values, as asked)", path, int((~keep).sum()),
                 len(keep))
    if not keep.any():
        raise InvalidInputError(f"{path}: no row is left after dropping the rows with unknown or non-finite values; "
                                "check the file, or pass nonfinite='zero'.")
    labels = parsed.labels[keep]
    found = sorted(set(labels.tolist()) - {BENIGN})
    classes = ((BENIGN,) if BENIGN in labels else ()) + tuple(found)
    return FlowTable(np.ascontiguousarray(matrix, dtype=np.float64), tuple(names), labels.astype(str), classes,
                     tuple(groups), categorical, parsed.format)
