"""The victim's training pipeline: which architecture, how long, which seed. Attacks poison its data, defenses
retrain with it, and every model of a poisoning matrix comes out of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bastion.data.base import DatasetSpec, Split
from bastion.zoo.architectures import build_model
from bastion.zoo.train import TrainConfig, init_model, train_classifier


@dataclass(frozen=True)
class Recipe:
    """Adam on cross-entropy with early stopping on the clean validation set (``bastion.zoo.train``)."""

    arch: str = "cnn"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, spec: DatasetSpec) -> nn.Module:
        """A fresh, untrained model, its weights drawn from ``seed``."""
        return init_model(lambda: build_model(self.arch, spec.shape, spec.num_classes, **self.arch_kwargs),
                          self.seed)

    def fit(self, train: Split, val: Split, spec: DatasetSpec) -> nn.Module:
        """A fresh model trained on ``train`` (in eval mode on return)."""
        model = self.build(spec)
        train_classifier(model, train, val, TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                                                        lr=self.lr, patience=self.epochs, seed=self.seed))
        return model.eval()

    def fitter(self, val: Split, spec: DatasetSpec) -> Callable[[Split], nn.Module]:
        """``fit`` with the validation set and spec bound: what a defense receives as ``DefenderView.fit``."""
        return lambda train: self.fit(train, val, spec)
