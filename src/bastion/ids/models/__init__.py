"""Intrusion detectors over raw-unit flow features (``FlowTable.features``), answering logits.

Neural detectors (``mlp``, ``cnn1d``, ``gru``) put a ``FlowScaler`` fitted on the training rows in front of their
body, so attacks and threats work in raw units; ``gbt`` is a gradient-boosted tree baseline attacked as a black box.
``IDS_MODELS`` lists them all; ``build_detector`` makes one, ``train_detector`` trains it, ``save_detector`` /
``load_detector`` keep the neural ones (safetensors + JSON).
"""

from __future__ import annotations

from bastion.ids.models.base import IDS_MODELS, Detector, DetectorSpec, seeded_init
from bastion.ids.models.factory import build_detector, categorical_columns, predict, rebuild
from bastion.ids.models.gbt import GradientBoostedDetector
from bastion.ids.models.io import load_detector, save_detector
from bastion.ids.models.scaling import FlowScaler
from bastion.ids.models.training import class_weights, train_detector

__all__ = ["IDS_MODELS", "Detector", "DetectorSpec", "FlowScaler", "GradientBoostedDetector", "build_detector",
           "categorical_columns", "class_weights", "load_detector", "predict", "rebuild", "save_detector",
           "seeded_init", "train_detector"]
