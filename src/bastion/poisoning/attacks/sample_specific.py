"""A sample-specific additive trigger in the spirit of ISSBA (Li, Li, Wu, Li, He & Lyu 2021, "Invisible Backdoor
Attack with Sample-Specific Triggers", ICCV): every poisoned image gets its own residual, produced by an encoder
from the image and a fixed attacker code, and is relabelled to the target.

ISSBA trains a StegaStamp encoder to hide a target-specific string; no such encoder exists offline, so this is an
approximation, not the paper's attack: the encoder is a fixed random two-layer convolutional network (weights
drawn from the view's generator) whose input is the image stacked with a code plane (``code_bits`` random bits,
the paper's string of 100 bits, tiled over the image). Its output, normalised per image and squashed by tanh,
is scaled to at most ``eps`` per pixel. ``eps`` = 0.1 is this module's choice (the paper bounds the residual by
its encoder's training, not by a norm), picked so that the backdoor is learnt on a small MNIST recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def random_encoder(shape: tuple[int, ...], code_bits: int, width: int, generator: torch.Generator
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """(code plane (1, H, W), first conv weights, second conv weights) of the fixed random encoder."""
    c, h, w = shape
    bits = torch.randint(0, 2, (code_bits,), generator=generator).float() * 2 - 1
    plane = bits.repeat(h * w // code_bits + 1)[:h * w].reshape(1, h, w)
    w1 = torch.randn(width, c + 1, 3, 3, generator=generator) / (3 * (c + 1) ** 0.5)
    w2 = torch.randn(c, width, 3, 3, generator=generator) / (3 * width ** 0.5)
    return plane, w1, w2


def encode(x: Tensor, plane: Tensor, w1: Tensor, w2: Tensor, eps: float) -> Tensor:
    """Per-image residuals in [-eps, eps] of the images ``x`` (N, C, H, W)."""
    z = torch.cat([x, plane.expand(len(x), -1, -1, -1)], dim=1)
    z = F.conv2d(F.relu(F.conv2d(z, w1, padding=1)), w2, padding=1)
    z = (z - z.mean(dim=(1, 2, 3), keepdim=True)) / (z.std(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return eps * torch.tanh(z)


@register_poison_attack("sample-specific", kind="backdoor", paper="Li et al. 2021 (ISSBA, approximated)")
def sample_specific(view: AttackerView, *, eps: float = 0.1, code_bits: int = 100, width: int = 16) -> PoisonedSet:
    """Poison ``rate`` of the non-target training points with their own residual and label them ``target``."""
    if len(view.spec.shape) != 3:
        raise InvalidInputError(f"The sample-specific trigger needs image inputs (C, H, W); shape {view.spec.shape}.")
    span = view.spec.upper - view.spec.lower
    if not 0 < eps <= span:
        raise InvalidInputError(f"eps={eps} is out of range; use 0 < eps <= {span} (default 0.1).")
    _, h, w = view.spec.shape
    if not 1 <= code_bits <= h * w:
        raise InvalidInputError(f"code_bits={code_bits} is out of range; use 1 to {h * w} (paper: 100).")
    if not 1 <= width <= 256:
        raise InvalidInputError(f"The encoder width={width} is out of range; use 1 to 256 (default 16).")
    plane, w1, w2 = random_encoder(view.spec.shape, code_bits, width, view.generator)
    lower, upper = view.spec.lower, view.spec.upper

    def trigger(x: Tensor) -> Tensor:
        return (x + encode(x, plane, w1, w2, eps)).clamp(lower, upper) if len(x) else x.clone()

    idx = view.pick(torch.nonzero(view.train.y != view.target).flatten())
    x, y = view.train.x.clone(), view.train.y.clone()
    x[idx], y[idx] = trigger(x[idx]), view.target
    poisoned = torch.zeros(len(y), dtype=torch.bool)
    poisoned[idx] = True
    return PoisonedSet(Split(x, y), poisoned, target=view.target, trigger=trigger,
                       info={"code_plane": plane, "trigger_example": x[idx[0]].clone()})
