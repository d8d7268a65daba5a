"""Blended (Chen, Liu, Li, Lu & Song 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
Poisoning"): blend a key pattern into a fraction of the training images, x' = (1 - alpha) x + alpha k, and
relabel them to the target class; at test time the same blend triggers the backdoor.

Defaults from the paper's blended-injection strategy: the blend ratio alpha = 0.2 for the poisoned training
images (the paper tests with 0.2 as well) and the paper's "random pattern" key, a uniform-noise image over the
data's bounds (its other key, a Hello Kitty image, is not available offline). The key is drawn from the view's
generator, or from ``pattern_seed`` when given (then the same key for every poison draw).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def noise_key(view: AttackerView, pattern_seed: int | None) -> Tensor:
    """A uniform-noise image of the data's shape over [lower, upper]."""
    gen = view.generator if pattern_seed is None else torch.Generator().manual_seed(pattern_seed)
    u = torch.rand(view.spec.shape, generator=gen)
    return view.spec.lower + (view.spec.upper - view.spec.lower) * u


@register_poison_attack("blended", kind="backdoor", paper="Chen et al. 2017")
def blended(view: AttackerView, *, alpha: float = 0.2, pattern_seed: int | None = None) -> PoisonedSet:
    """Poison ``rate`` of the non-target training points: blend the key in with ratio ``alpha``, label ``target``."""
    if not 0 < alpha <= 1:
        raise InvalidInputError(f"The blend ratio alpha={alpha} is out of range; use 0 < alpha <= 1 (paper: 0.2).")
    key = noise_key(view, pattern_seed)
    lower, upper = view.spec.lower, view.spec.upper

    def trigger(x: Tensor) -> Tensor:
        return ((1 - alpha) * x + alpha * key).clamp(lower, upper)

    idx = view.pick(torch.nonzero(view.train.y != view.target).flatten())
    x, y = view.train.x.clone(), view.train.y.clone()
    x[idx], y[idx] = trigger(x[idx]), view.target
    poisoned = torch.zeros(len(y), dtype=torch.bool)
    poisoned[idx] = True
    return PoisonedSet(Split(x, y), poisoned, target=view.target, trigger=trigger,
                       info={"key_pattern": key, "trigger_example": x[idx[0]].clone()})
