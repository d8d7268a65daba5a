"""Attacks: one algorithm per module, each registered in ``ATTACKS`` with its metadata."""

from bastion.attacks import fgsm, pgd  # noqa: F401  (import registers)
from bastion.attacks.base import ATTACKS, AttackSpec, get_attack, register_attack

__all__ = ["ATTACKS", "AttackSpec", "get_attack", "register_attack"]
