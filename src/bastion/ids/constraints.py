"""The feature constraints of a network flow, derived for the CIC layout or read from a YAML file.

For CIC-IDS2017's layout (``bastion.ids.features``) the relations below are derived automatically, restricted to the
columns a data set has (CIC-IDS2017's MachineLearningCSV files lack ``Protocol``, for example): a mean is a total
over a count, a rate is a total over the duration, an inter-arrival mean is a span over the gaps between packets, a
minimum is at most the mean and a maximum at least it, a flag count is at most the packets that could carry it, and no
rate exceeds what a 10 Gb/s link carries (so a duration cannot shrink below what its packets need). The
destination port and the protocol are immutable (they are the attack's target); integer features stay integers; the
box is the data's own range unless a constraint file says otherwise.

A constraint file (YAML) adds to or replaces that::

    layout: cic            # start from the derived CIC constraints (default: cic when the columns match, else none)
    features:
      Flow Duration: {immutable: true}
      Total Fwd Packets: {integer: true, lower: 1, upper: 5000, weight: 2.0}   # weight scales the feature's budget
    relations:
      - "[Total Fwd Packets] >= [Fwd PSH Flags]"
    groups:
      - [proto_tcp, proto_udp, proto_icmp]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.errors import InvalidInputError
from bastion.ids.features import BY_NAME
from bastion.threats.relations import names_in
from bastion.threats.tabular import TabularThreat
from bastion.yamlfile import read_yaml_mapping

_SECONDS = "([Flow Duration] / 1e6)"
_PACKETS = "([Total Fwd Packets] + [Total Backward Packets])"
_BYTES = "([Total Length of Fwd Packets] + [Total Length of Bwd Packets])"
# a flow with no backward packet has Bwd Packet Length Min 0, which is not a packet's length: floor(1 / (b + 1)) is 1
# exactly when there is none, and then the minimum over all packets is the forward one
_NO_BWD = "floor(1 / ([Total Backward Packets] + 1))"


def _direction(d: str, total: str, count: str) -> list[str]:
    """Per-direction relations (d is "Fwd" or "Bwd")."""
    length, iat = f"{d} Packet Length", f"{d} IAT"
    return [
        f"[{length} Mean] == [{total}] / [{count}]",
        f"[{length} Min] <= [{length} Mean]",
        f"[{length} Max] >= [{length} Mean]",
        f"[{length} Max] <= [{total}]",
        f"[{length} Std] <= [{length} Max] - [{length} Min]",
        f"[{iat} Mean] == [{iat} Total] / ([{count}] - 1)",
        f"[{iat} Total] <= [Flow Duration]",
        f"[{iat} Min] <= [{iat} Mean]",
        f"[{iat} Max] >= [{iat} Mean]",
        f"[{iat} Max] <= [{iat} Total]",
        f"[{iat} Std] <= [{iat} Max] - [{iat} Min]",
        f"[{d} Packets/s] == [{count}] / {_SECONDS}",
        f"[{d} PSH Flags] <= [{count}]",
        f"[{d} URG Flags] <= [{count}]",
        f"[Avg {d} Segment Size] == [{length} Mean]",
    ]


# Physical limits of the wire: a 10 Gb/s Ethernet link carries at most 14,880,952 frames a second (64-byte frames
# plus the 20 bytes of preamble and inter-frame gap: 10e9 / (84 * 8)) and 1.25e9 bytes a second. Without them a flow
# whose duration shrinks to a fraction of a microsecond would keep its packets at a rate no link can carry.
LINE_PACKETS = 14_880_952
LINE_BYTES = 1_250_000_000
_LINE = (f"[Flow Packets/s] <= {LINE_PACKETS}", f"[Fwd Packets/s] <= {LINE_PACKETS}",
         f"[Bwd Packets/s] <= {LINE_PACKETS}", f"[Flow Bytes/s] <= {LINE_BYTES}")

CIC_RELATIONS: tuple[str, ...] = (
    *_direction("Fwd", "Total Length of Fwd Packets", "Total Fwd Packets"),
    *_direction("Bwd", "Total Length of Bwd Packets", "Total Backward Packets"),
    f"[Flow Bytes/s] == {_BYTES} / {_SECONDS}",
    f"[Flow Packets/s] == {_PACKETS} / {_SECONDS}",
    f"[Flow IAT Mean] == [Flow Duration] / ({_PACKETS} - 1)",
    "[Flow IAT Min] <= [Flow IAT Mean]",
    "[Flow IAT Max] >= [Flow IAT Mean]",
    "[Flow IAT Max] <= [Flow Duration]",
    "[Flow IAT Std] <= [Flow IAT Max] - [Flow IAT Min]",
    "[Max Packet Length] == max([Fwd Packet Length Max], [Bwd Packet Length Max])",
    "[Min Packet Length] == min([Fwd Packet Length Min], "
    f"[Bwd Packet Length Min] + [Fwd Packet Length Min] * {_NO_BWD})",
    f"[Packet Length Mean] == {_BYTES} / {_PACKETS}",
    "[Packet Length Std] <= [Max Packet Length] - [Min Packet Length]",
    "[Down/Up Ratio] == floor([Total Backward Packets] / [Total Fwd Packets])",
    *(f"[{flag} Flag Count] <= {_PACKETS}" for flag in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWE", "ECE")),
    *_LINE,
)
CIC_IMMUTABLE = ("Destination Port", "Protocol")


def cic_relations(columns: Sequence[str]) -> tuple[str, ...]:
    """The CIC relations whose every feature is among ``columns``."""
    present = set(columns)
    return tuple(r for r in CIC_RELATIONS if set(names_in(r)) <= present)


def _is_cic(columns: Sequence[str]) -> bool:
    return sum(c in BY_NAME for c in columns) >= len(columns) // 2 + 1


def _read(spec: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    if spec is None:
        return {}
    data = spec if isinstance(spec, dict) else read_yaml_mapping(Path(spec), "constraint file")
    unknown = set(data) - {"layout", "features", "relations", "groups"}
    if unknown:
        raise InvalidInputError(f"Constraint file: unknown key(s) {', '.join(sorted(unknown))}; the keys are layout, "
                                "features, relations, groups.")
    return data


def _flags(columns: tuple[str, ...], data: np.ndarray, layout: bool) -> dict[str, np.ndarray]:
    integer = np.array([layout and c in BY_NAME and BY_NAME[c].integer for c in columns])
    mutable = np.array([not (layout and c in CIC_IMMUTABLE) for c in columns])
    return {"integer": integer, "mutable": mutable, "lower": data.min(0), "upper": data.max(0),
            "weight": np.ones(len(columns))}


def _apply_features(flags: dict[str, np.ndarray], columns: tuple[str, ...], features: dict[str, Any]) -> None:
    keys = {"immutable", "integer", "lower", "upper", "weight"}
    for name, decl in (features or {}).items():
        if name not in columns:
            raise InvalidInputError(f"Constraint file names feature {name!r}, which the data does not have; columns "
                                    f"include {', '.join(columns[:4])}...")
        if not isinstance(decl, dict) or set(decl) - keys:
            raise InvalidInputError(f"Constraint file, feature {name!r}: give a mapping with keys from "
                                    f"{', '.join(sorted(keys))}.")
        i = columns.index(name)
        for key, value in decl.items():
            if key == "immutable":
                flags["mutable"][i] = not bool(value)
            else:
                flags[key][i] = value


def _groups(columns: tuple[str, ...], groups: list[list[str]] | None) -> tuple[tuple[int, ...], ...]:
    out = []
    for group in groups or []:
        missing = [g for g in group if g not in columns]
        if missing:
            raise InvalidInputError(f"Constraint file: one-hot group names unknown columns {missing}.")
        out.append(tuple(columns.index(g) for g in group))
    return tuple(out)


def flow_threat(columns: Sequence[str], data: np.ndarray, *, norm: str = "linf", eps: float = 0.1,
                constraints: str | Path | dict[str, Any] | None = None,
                groups: tuple[tuple[int, ...], ...] = ()) -> TabularThreat:
    """The tabular threat for flows with ``columns`` whose range is that of ``data`` (raw units, e.g. the training
    split): the CIC relations when the layout is CIC's, plus or instead of a constraint file. The data must satisfy
    every constraint; a file that contradicts it is one clear line."""
    cols = tuple(columns)
    spec = _read(constraints)
    layout = spec.get("layout", "cic" if _is_cic(cols) else "none")
    if layout not in ("cic", "none"):
        raise InvalidInputError(f"Constraint file: layout {layout!r} is not known; use cic or none.")
    flags = _flags(cols, data, layout == "cic")
    _apply_features(flags, cols, spec.get("features") or {})
    relations = (cic_relations(cols) if layout == "cic" else ()) + tuple(spec.get("relations") or ())
    threat = TabularThreat(
        cols, norm, float(eps), torch.as_tensor(flags["lower"], dtype=torch.float64),  # type: ignore[arg-type]
        torch.as_tensor(flags["upper"], dtype=torch.float64), integer=torch.as_tensor(flags["integer"]),
        mutable=torch.as_tensor(flags["mutable"]), weight=torch.as_tensor(flags["weight"], dtype=torch.float64),
        relations=relations, groups=groups + _groups(cols, spec.get("groups")))
    threat.validate(torch.as_tensor(data, dtype=torch.float64))
    return threat


__all__ = ["CIC_RELATIONS", "cic_relations", "flow_threat"]
