"""A toy problem where standard training is not robust and adversarial training can be (linear model: convex).

Feature 0 is robust: ``0.5 + 0.4 y`` (y in {-1, +1}) plus small noise, so an L-inf eps of 0.2 cannot move it
across 0.5. Features 1..d are weak but many: ``0.5 + 0.1 y`` plus noise; together they predict perfectly, so
standard training leans on them, and an eps of 0.3 flips every one of them.
"""

from __future__ import annotations

import torch
from torch import nn

from bastion.data.base import Split
from bastion.zoo.architectures import build_model
from bastion.zoo.train import init_model

EPS = 0.2


def toy(n: int, seed: int, d: int = 60) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    s = (2 * y - 1).float()[:, None]
    robust = 0.5 + 0.4 * s[:, :1] + 0.04 * torch.randn(n, 1, generator=g)
    weak = 0.5 + 0.1 * s + 0.1 * torch.randn(n, d, generator=g)
    return Split(torch.cat([robust, weak], 1).clamp(0, 1), y)


def toy_model(seed: int = 0, d: int = 60) -> nn.Module:
    return init_model(lambda: build_model("mlp", (d + 1,), 2, width=32, depth=0), seed)
