"""Model stealing (extraction): attacks that copy a deployed model through its answers, the output defenses and
detectors that stand in their way, and the measurements that score all three together (docs/STEALING.md)."""

from bastion.stealing.base import (
    DETECTORS,
    OUTPUT_DEFENSES,
    STEAL_ATTACKS,
    DefenseContext,
    Detector,
    OutputDefense,
    QueryAPI,
    ThiefView,
    Transcript,
    VictimSpec,
)
from bastion.stealing.copy import CopyRecipe

__all__ = ["DETECTORS", "OUTPUT_DEFENSES", "STEAL_ATTACKS", "CopyRecipe", "DefenseContext", "Detector",
           "OutputDefense", "QueryAPI", "ThiefView", "Transcript", "VictimSpec", "load_algorithms"]


def load_algorithms() -> None:
    """Import (and so register) every extraction attack, output defense and detector."""
    import bastion.stealing.attacks
    import bastion.stealing.defenses
    import bastion.stealing.detectors  # noqa: F401
