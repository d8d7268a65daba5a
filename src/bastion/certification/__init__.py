"""Certified robustness: randomized smoothing (L2, probabilistic), interval bound propagation and CROWN
(L-inf / L2, deterministic), and 1-Lipschitz networks with margin certificates (L2).

Functions whose short names collide across methods are exported with a prefix
(``smoothed_predict``/``smoothed_certify``, ``ibp_verified``/``crown_verified``); the modules
``smoothing``, ``ibp``, ``crown`` and ``lipschitz`` keep the paper's names (``smoothing.certify``).
"""

from bastion.certification import crown, ibp, lipschitz, smoothing
from bastion.certification.crown import crown_bounds, crown_ibp_loss
from bastion.certification.crown import verified as crown_verified
from bastion.certification.ibp import IBPSchedule, IBPStep, ibp_loss, ibp_train_step, interval_bounds
from bastion.certification.ibp import verified as ibp_verified
from bastion.certification.lipschitz import (
    GroupSort,
    LipschitzCertificate,
    OrthoLinear,
    lipschitz_certify,
    lipschitz_constant,
    lipschitz_mlp,
)
from bastion.certification.smoothing import PRESETS, Certificate, SmoothedPrediction, gaussian_augmentation_step
from bastion.certification.smoothing import certify as smoothed_certify
from bastion.certification.smoothing import predict as smoothed_predict

__all__ = [
    "PRESETS",
    "Certificate",
    "GroupSort",
    "IBPSchedule",
    "IBPStep",
    "LipschitzCertificate",
    "OrthoLinear",
    "SmoothedPrediction",
    "crown",
    "crown_bounds",
    "crown_ibp_loss",
    "crown_verified",
    "gaussian_augmentation_step",
    "ibp",
    "ibp_loss",
    "ibp_train_step",
    "ibp_verified",
    "interval_bounds",
    "lipschitz",
    "lipschitz_certify",
    "lipschitz_constant",
    "lipschitz_mlp",
    "smoothed_certify",
    "smoothed_predict",
    "smoothing",
]
