"""WaNet (Nguyen & Tran 2021, "WaNet - Imperceptible Warping-based Backdoor Attack", ICLR): the trigger is a
fixed, smooth, random warp of the image instead of an added pattern.

The warping field: a k x k grid of control displacements drawn uniformly in [-1, 1] (both coordinates),
normalised by their mean absolute value, upsampled bicubically to the image size, scaled by s / h (so ``s``
bounds the displacement in pixels, roughly) and added to the identity sampling grid in normalised coordinates,
clamped to [-1, 1]; the images are resampled along it (bilinear ``grid_sample``). Poisoned points are warped and
relabelled to the target. "Noise mode": another ``cross_ratio`` x rate of the points are warped along the grid plus
uniform noise in [-1, 1] / h per pixel and KEEP their labels, so that the network learns the exact warp and not
warping in general.

Defaults from the paper's MNIST setting: k = 4, s = 0.5, cross_ratio = 2. In the paper the poisoning is done per
batch inside the attacker's own training loop (fresh noise grids every batch, many epochs). Here it is a
data-poisoning attack: one static poisoned set that the victim's recipe trains on. On the tests' MNIST fixture (a
CNN trained for 2 epochs) the paper's s = 0.5 is too weak a warp to be learnt from a static set; the tests use
a stronger warp (measured there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def warp_grid(h: int, w: int, k: int, s: float, generator: torch.Generator) -> Tensor:
    """The backdoor's sampling grid, (1, h, w, 2) in grid_sample's (x, y) normalised coordinates."""
    control = torch.rand(1, 2, k, k, generator=generator) * 2 - 1
    control = control / control.abs().mean()
    field = F.interpolate(control, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    identity = torch.stack((xs, ys), dim=-1)[None]
    return (identity + s * field / h).clamp(-1, 1)


def warp(x: Tensor, grid: Tensor, lower: float, upper: float) -> Tensor:
    """Resample the images ``x`` (N, C, H, W) along ``grid`` (1 or N, H, W, 2)."""
    if len(x) == 0:
        return x.clone()
    out = F.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.clamp(lower, upper)


def _check(view: AttackerView, k: int, s: float, cross_ratio: float) -> tuple[int, int]:
    if len(view.spec.shape) != 3:
        raise InvalidInputError(f"WaNet needs image inputs (C, H, W); this data has shape {view.spec.shape}.")
    _, h, w = view.spec.shape
    if not 2 <= k <= min(h, w):
        raise InvalidInputError(f"WaNet grid size k={k} is out of range; use 2 to {min(h, w)} (paper: 4).")
    if not 0 < s <= h:
        raise InvalidInputError(f"WaNet warp strength s={s} is out of range; use 0 < s <= {h} (paper: 0.5).")
    if not 0 <= cross_ratio <= 10:
        raise InvalidInputError(f"WaNet cross_ratio={cross_ratio} is out of range; use 0 to 10 (paper: 2).")
    return h, w


@register_poison_attack("wanet", kind="backdoor", paper="Nguyen & Tran 2021")
def wanet(view: AttackerView, *, k: int = 4, s: float = 0.5, cross_ratio: float = 2.0) -> PoisonedSet:
    """Warp ``rate`` of the non-target training points and label them ``target``; warp ``cross_ratio`` x as many
    others with a noisy grid, labels kept (noise mode)."""
    h, w = _check(view, k, s, cross_ratio)
    lower, upper = view.spec.lower, view.spec.upper
    grid = warp_grid(h, w, k, s, view.generator)

    def trigger(x: Tensor) -> Tensor:
        return warp(x, grid, lower, upper)

    idx = view.pick(torch.nonzero(view.train.y != view.target).flatten())
    poisoned = torch.zeros(len(view.train), dtype=torch.bool)
    poisoned[idx] = True
    cross = torch.zeros_like(poisoned)
    n_cross = round(cross_ratio * len(idx))
    if n_cross:
        cidx = view.pick(torch.nonzero(~poisoned).flatten(), min(n_cross, int((~poisoned).sum())))
        cross[cidx] = True
    x, y = view.train.x.clone(), view.train.y.clone()
    x[idx], y[idx] = trigger(x[idx]), view.target
    if cross.any():
        noise = (torch.rand(int(cross.sum()), h, w, 2, generator=view.generator) * 2 - 1) / h
        x[cross] = warp(x[cross], (grid + noise).clamp(-1, 1), lower, upper)
    return PoisonedSet(Split(x, y), poisoned, target=view.target, trigger=trigger,
                       info={"grid": grid, "cross": cross, "trigger_example": x[idx[0]].clone()})
