"""Data poisoning and backdoors (issue 21): attacks on the training set, defenses at the three places a defender can
act (before training, during or after it, at inference), and the attack x defense matrix."""

from bastion.poisoning import attacks, defenses  # noqa: F401  (import registers)
from bastion.poisoning.base import (
    POISON_ATTACKS,
    POISON_DEFENSES,
    AttackerView,
    DefenderView,
    DefenseResult,
    PoisonedSet,
    register_poison_attack,
    register_poison_defense,
)

__all__ = ["POISON_ATTACKS", "POISON_DEFENSES", "AttackerView", "DefenderView", "DefenseResult", "PoisonedSet",
           "register_poison_attack", "register_poison_defense"]
