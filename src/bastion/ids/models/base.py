"""The detector registry, the ``Detector`` module (scaler + body) and seeded initialization."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.ids.models.scaling import FlowScaler
from bastion.registry import Registry


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector. ``build(in_features, num_classes, *, generator, **kwargs)`` makes a neural body (the
    ``Detector`` puts the scaler in front), or, for ``differentiable=False``, the whole black-box detector."""

    name: str
    build: Callable[..., nn.Module]
    description: str
    paper: str
    differentiable: bool = True


IDS_MODELS: Registry[DetectorSpec] = Registry("IDS detector", "bastion ids train --help")


def register_detector(name: str, description: str, paper: str,
                      differentiable: bool = True) -> Callable[[Callable], Callable]:
    return IDS_MODELS.decorator(name, lambda fn: DetectorSpec(name, fn, description, paper, differentiable))


class Detector(nn.Module):
    """Raw-unit flows ``(N, D)`` -> the fitted ``FlowScaler`` -> a body -> logits ``(N, C)``.

    ``config`` holds what rebuilds it (architecture, its arguments, sizes, categorical columns) for saving."""

    def __init__(self, scaler: FlowScaler, body: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.scaler, self.body, self.config = scaler, body, config

    def forward(self, x: Tensor) -> Tensor:
        z = self.scaler(x)
        return self.body(z.to(next(self.body.parameters()).dtype))


def seeded_init(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialization, drawn from ``generator`` instead of the global RNG: U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) for linear and convolution weights and biases, U(-1/sqrt(hidden), 1/sqrt(hidden)) for
    recurrent layers, N(0, 1) for embeddings."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv1d):
            bound = 1.0 / math.sqrt(layer.weight[0].numel())
            for p in (layer.weight, layer.bias):
                if p is not None:
                    nn.init.uniform_(p, -bound, bound, generator=generator)
        elif isinstance(layer, nn.GRU | nn.LSTM | nn.RNN):
            bound = 1.0 / math.sqrt(layer.hidden_size)
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound, generator=generator)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(layer.weight, generator=generator)
    return module
