"""Attacks: one algorithm per module, each registered in ``ATTACKS`` with its metadata."""

from bastion.attacks import apgd, cw, ddn, deepfool, fgsm, fmn, pgd  # noqa: F401  (import registers)
from bastion.attacks.adaptive import bpda, eot
from bastion.attacks.base import ATTACKS, AttackSpec, get_attack, register_attack

# isort: split
from bastion.attacks import boundary, hopskipjump, mi_fgsm, nes, spsa, square, zoo  # noqa: F401  (black-box)

# isort: split
from bastion.attacks import caa, capgd, cpgd, moeva2  # noqa: F401  (tabular threats with feature constraints)

# isort: split
from bastion.attacks import idsgan, kde_evasion, tabular_deepfool, tabular_zoo  # noqa: F401  (the IDS survey's)

__all__ = ["ATTACKS", "AttackSpec", "bpda", "eot", "get_attack", "register_attack"]
