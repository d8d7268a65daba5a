"""The flow-feature layout bastion's IDS tools share: CIC-IDS2017's names, units and kinds.

Every flow is bidirectional: "forward" is the direction of the flow's first packet (the initiator), "backward" the
answer. Names are those of CIC-IDS2017's CSV files (CICFlowMeter), with the leading spaces stripped; units follow
them too: durations and inter-arrival times in microseconds, lengths in bytes of transport payload, rates per
second. ``Protocol`` is the IP protocol number (6 TCP, 17 UDP, 1 ICMP); models see it one-hot.

Kinds:
- ``primary``: set by what the endpoints did (a packet count, a byte total, a maximum); an attacker shapes these.
- ``derived``: a function of primaries (a mean is a sum over a count; a rate is a total over the duration);
  ``bastion.ids.constraints`` states each relation.
- ``integer``: a count or a byte total; ``immutable``: fixed by the attack's purpose (its target port, its
  protocol).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    integer: bool = False
    immutable: bool = False
    derived: bool = False
    lower: float = 0.0  # every flow feature is non-negative


def _f(name: str, **kw: bool | float) -> Feature:
    return Feature(name, **kw)  # type: ignore[arg-type]


_STATS = ("Max", "Min", "Mean", "Std")
_IAT = ("Mean", "Std", "Max", "Min")

FEATURES: tuple[Feature, ...] = (
    _f("Destination Port", integer=True, immutable=True),
    _f("Protocol", integer=True, immutable=True),
    _f("Flow Duration"),
    _f("Total Fwd Packets", integer=True, lower=1.0),
    _f("Total Backward Packets", integer=True),
    _f("Total Length of Fwd Packets", integer=True),
    _f("Total Length of Bwd Packets", integer=True),
    *(_f(f"Fwd Packet Length {s}", derived=s == "Mean", integer=s in ("Max", "Min")) for s in _STATS),
    *(_f(f"Bwd Packet Length {s}", derived=s == "Mean", integer=s in ("Max", "Min")) for s in _STATS),
    _f("Flow Bytes/s", derived=True),
    _f("Flow Packets/s", derived=True),
    *(_f(f"Flow IAT {s}", derived=s == "Mean") for s in _IAT),
    _f("Fwd IAT Total"),
    *(_f(f"Fwd IAT {s}", derived=s == "Mean") for s in _IAT),
    _f("Bwd IAT Total"),
    *(_f(f"Bwd IAT {s}", derived=s == "Mean") for s in _IAT),
    _f("Fwd PSH Flags", integer=True),
    _f("Bwd PSH Flags", integer=True),
    _f("Fwd URG Flags", integer=True),
    _f("Bwd URG Flags", integer=True),
    _f("Fwd Packets/s", derived=True),
    _f("Bwd Packets/s", derived=True),
    _f("Min Packet Length", integer=True, derived=True),
    _f("Max Packet Length", integer=True, derived=True),
    _f("Packet Length Mean", derived=True),
    _f("Packet Length Std"),
    *(_f(f"{flag} Flag Count", integer=True) for flag in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWE", "ECE")),
    _f("Down/Up Ratio", integer=True, derived=True),
    _f("Avg Fwd Segment Size", derived=True),
    _f("Avg Bwd Segment Size", derived=True),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
PROTOCOLS: dict[int, str] = {6: "TCP", 17: "UDP", 1: "ICMP"}
LABEL = "Label"
BENIGN = "BENIGN"

__all__ = ["BENIGN", "BY_NAME", "FEATURES", "FEATURE_NAMES", "LABEL", "PROTOCOLS", "Feature"]
