"""The thief's training recipe: a fresh copy trained on the answered queries.

Probability answers are soft targets (cross-entropy against the victim's distribution, as KnockoffNets trains);
label answers are hard targets. The thief has no labelled validation data, so it trains for a fixed number of
steps: ``epochs`` passes, but at least ``min_steps`` optimizer steps on small query sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.stealing.base import VictimSpec
from bastion.zoo.architectures import build_model
from bastion.zoo.train import init_model


@dataclass(frozen=True)
class CopyRecipe:
    """Adam on cross-entropy against the answers; ``arch`` is any registered architecture."""

    arch: str = "cnn"
    epochs: int = 10
    min_steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, spec: VictimSpec) -> nn.Module:
        return init_model(lambda: build_model(self.arch, spec.shape, spec.num_classes, **self.arch_kwargs),
                          self.seed)

    def fit(self, x: Tensor, answers: Tensor, spec: VictimSpec, model: nn.Module | None = None) -> nn.Module:
        """A copy trained on ``(x, answers)`` (a fresh one, or ``model`` trained further); in eval mode."""
        model = self.build(spec) if model is None else model
        if x.shape[0] == 0:
            return model.eval()
        target = answers.float() if answers.dim() == 2 else answers.long()
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        per_epoch = math.ceil(x.shape[0] / self.batch_size)
        epochs = max(self.epochs, math.ceil(self.min_steps / per_epoch))
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(x.shape[0], generator=generator).split(self.batch_size):
                idx = idx.to(x.device)
                loss = F.cross_entropy(model(x[idx]), target[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return model.eval()
