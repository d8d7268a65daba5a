"""Pieces shared by the output defenses that build a model of their own."""

from __future__ import annotations

import torch
from torch import nn

from bastion.stealing.base import DefenseContext
from bastion.zoo.architectures import build_model
from bastion.zoo.train import init_model


def seed_from(generator: torch.Generator) -> int:
    """A seed drawn from ``generator`` (so a defense's own randomness follows the context's)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def small_model(ctx: DefenseContext) -> nn.Module:
    """bastion's small ``cnn`` (width 8, hidden 64) for the victim's shape, randomly initialised from the
    context's generator."""
    spec = ctx.spec
    return init_model(lambda: build_model("cnn", spec.shape, spec.num_classes, width=8, hidden=64),
                      seed_from(ctx.generator))
