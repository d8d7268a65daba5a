"""SIG (Barni, Kallas & Tondi 2019, "A new backdoor attack in CNNs by training set corruption without label
poisoning", ICIP): a clean-label backdoor. A horizontal sinusoidal signal v(i, j) = Delta sin(2 pi j f / m) (m the
image width) is added to training images of the target class only; no label is changed. The network learns the
signal as a feature of the target class, and at test time the signal added to any image moves it there.

Defaults from the paper's sinusoidal setting: Delta = 20/255 (the paper's 20 on 0-255 images) and f = 6 for the
poisoned training images; the paper raises the signal's strength at test time, taken here as
``test_delta`` = 30/255. The rate is of the whole training set and is capped by how many target-class images
exist. Every stamped image is clipped to the data's bounds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def sinusoid(shape: tuple[int, ...], delta: float, freq: float) -> Tensor:
    """The signal v(i, j) = delta sin(2 pi j freq / m) on images of ``shape`` (C, H, W), the same on every row."""
    if len(shape) != 3:
        raise InvalidInputError(f"SIG needs image inputs (C, H, W); this data has shape {shape}.")
    c, h, w = shape
    row = delta * torch.sin(2 * math.pi * torch.arange(w, dtype=torch.float32) * freq / w)
    return row.expand(c, h, w).clone()


def _check(delta: float, test_delta: float, freq: float, span: float) -> None:
    for name, value in (("delta", delta), ("test_delta", test_delta)):
        if not 0 < value <= span:
            raise InvalidInputError(f"SIG {name}={value} is out of range; use 0 < {name} <= {span} (the data's "
                                    "range; paper: 20/255 for training).")
    if not freq > 0:
        raise InvalidInputError(f"SIG frequency freq={freq} must be positive (paper: 6).")


@register_poison_attack("sig", kind="clean-label", paper="Barni et al. 2019")
def sig(view: AttackerView, *, delta: float = 20 / 255, freq: float = 6.0, test_delta: float = 30 / 255
        ) -> PoisonedSet:
    """Add the sinusoid (strength ``delta``) to ``rate`` worth of target-class training images, labels unchanged;
    the test trigger adds it with strength ``test_delta``."""
    lower, upper = view.spec.lower, view.spec.upper
    _check(delta, test_delta, freq, upper - lower)
    candidates = torch.nonzero(view.train.y == view.target).flatten()
    n = view.n_poison()
    if n > len(candidates):
        raise InvalidInputError(
            f"SIG poisons target-class images only: rate {view.rate} needs {n} of them but class {view.target} has "
            f"{len(candidates)}; use a rate of at most {len(candidates) / len(view.train):.4f}.")
    idx = view.pick(candidates, n)
    train_signal = sinusoid(view.spec.shape, delta, freq)
    test_signal = sinusoid(view.spec.shape, test_delta, freq)

    def trigger(x: Tensor) -> Tensor:
        return (x + test_signal).clamp(lower, upper)

    x = view.train.x.clone()
    x[idx] = (x[idx] + train_signal).clamp(lower, upper)
    poisoned = torch.zeros(len(x), dtype=torch.bool)
    poisoned[idx] = True
    return PoisonedSet(Split(x, view.train.y.clone()), poisoned, target=view.target, trigger=trigger,
                       info={"signal": train_signal, "test_signal": test_signal, "trigger_example": x[idx[0]].clone()})
