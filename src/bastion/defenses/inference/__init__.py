"""Inference-time defenses: modules that wrap a classifier (inputs in [0, 1], logits out).

``build_defense(name, model, **params)`` builds one from the registry ``DEFENSES`` (``bastion defend list``);
``build_pipeline(config)`` composes several (detector -> purifier -> ensemble -> model). A detector-defended
model has ``reject_class`` and one extra logit; see ``bastion.defenses.inference.detectors``.
"""

from bastion.defenses.inference import (  # noqa: F401  (import registers)
    detectors,
    diffpure,
    distillation,
    dynamic,
    ensemble,
    pipeline,
    squeeze,
    transforms,
)
from bastion.defenses.inference.base import (
    DEFENSES,
    DefenseSpec,
    Preprocessed,
    accuracy,
    build_defense,
    false_rejection_rate,
    register_defense,
)
from bastion.defenses.inference.detectors import MahalanobisDetector, SqueezeDetector
from bastion.defenses.inference.distillation import train_distilled
from bastion.defenses.inference.pipeline import PipelineConfig, build_pipeline, load_config

__all__ = [
    "DEFENSES", "DefenseSpec", "MahalanobisDetector", "PipelineConfig", "Preprocessed", "SqueezeDetector",
    "accuracy", "build_defense", "build_pipeline", "false_rejection_rate", "load_config", "register_defense",
    "train_distilled",
]
