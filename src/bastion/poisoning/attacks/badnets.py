"""BadNets (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain"): stamp a small patch on a fraction of the training images and relabel them to the target class.

Defaults follow the paper's MNIST setting: a 3x3 white square (the paper's single-pixel and pattern backdoors are
the same idea) in the bottom-right corner, all-to-one. The patch is a checkerboard of the data's upper and lower
bounds by default (``pattern="checker"``), which survives normalisation better than a plain white square; ``white``
gives the paper's square.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def patch_trigger(shape: tuple[int, ...], size: int, position: str, pattern: str, lower: float,
                  upper: float) -> tuple[Tensor, Tensor]:
    """(mask, values) of a ``size`` x ``size`` patch at ``position`` on inputs of ``shape`` (C, H, W)."""
    if len(shape) != 3:
        raise InvalidInputError(f"A patch trigger needs image inputs (C, H, W); this data has shape {shape}.")
    c, h, w = shape
    if not 1 <= size <= min(h, w):
        raise InvalidInputError(f"The trigger size {size} does not fit the {h}x{w} image; use 1 to {min(h, w)}.")
    corners = {"bottom-right": (h - size - 1, w - size - 1), "top-left": (1, 1), "top-right": (1, w - size - 1),
               "bottom-left": (h - size - 1, 1)}
    if position not in corners:
        raise InvalidInputError(f"Unknown trigger position {position!r}; use one of {', '.join(corners)}.")
    top, left = (max(0, v) for v in corners[position])
    mask = torch.zeros(1, h, w)
    mask[:, top:top + size, left:left + size] = 1
    if pattern == "white":
        values = torch.full((c, h, w), upper)
    elif pattern == "checker":
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        values = torch.where(((ii + jj) % 2 == 0), upper, lower).expand(c, h, w).clone()
    else:
        raise InvalidInputError(f"Unknown trigger pattern {pattern!r}; use white or checker.")
    return mask, values


@register_poison_attack("badnets", kind="backdoor", paper="Gu et al. 2017")
def badnets(view: AttackerView, *, size: int = 3, position: str = "bottom-right",
            pattern: Literal["white", "checker"] = "checker") -> PoisonedSet:
    """Poison ``rate`` of the non-target training points: stamp the patch, set the label to ``target``."""
    mask, values = patch_trigger(view.spec.shape, size, position, pattern, view.spec.lower, view.spec.upper)

    def trigger(x: Tensor) -> Tensor:
        return x * (1 - mask) + values * mask

    idx = view.pick(torch.nonzero(view.train.y != view.target).flatten())
    x, y = view.train.x.clone(), view.train.y.clone()
    x[idx], y[idx] = trigger(x[idx]), view.target
    poisoned = torch.zeros(len(y), dtype=torch.bool)
    poisoned[idx] = True
    return PoisonedSet(Split(x, y), poisoned, target=view.target, trigger=trigger,
                       info={"trigger_mask": mask, "trigger_values": values})
