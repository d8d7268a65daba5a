"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, "Distillation as a Defense to
Adversarial Perturbations against Deep Neural Networks", IEEE S&P).

Train a teacher with softmax(z / T), label the training set with its soft labels at the same T, train a
student (same architecture) on them at T, deploy the student at T = 1. Papernot et al. evaluated
T in {1, 2, 5, 10, 20, 30, 40, 50, 100}; adversarial success fell with T and T = 100 was the strongest
(Carlini & Wagner 2016, "Defensive Distillation is Not Robust to Adversarial Examples", used T = 100 too).

Why it is not robust: at T = 1 the student's logits are ~T times larger than a normally trained network's,
so softmax saturates; the cross-entropy gradient is (softmax - onehot) * dz/dx, which underflows to zero
in float32 for most points. Gradient attacks on cross-entropy stall ("vanishing gradients", which
bastion's probe reports); losses on the logits themselves -- C&W's margin, APGD's DLR, which is also
scale-invariant -- are unaffected and break it (Carlini & Wagner 2016/2017).

Deviation for CPU budgets: ``warm_start=True`` (default) initialises the teacher from the given model's
weights instead of training from scratch; the paper trains both networks from scratch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.defenses.inference.base import register_defense, seeded

PAPER = ("Papernot et al. 2016, Distillation as a Defense to Adversarial Perturbations against Deep Neural "
         "Networks")


def _fit(model: nn.Module, x: Tensor, targets: Tensor, temperature: float, epochs: int, lr: float,
         batch_size: int, generator: torch.Generator) -> nn.Module:
    """Minimise the cross-entropy between softmax(model(x) / T) and soft ``targets`` (rows summing to 1)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            logp = F.log_softmax(model(x[idx]) / temperature, 1)
            loss = -(targets[idx] * logp).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _reinit(model: nn.Module, seed: int) -> None:
    """Fresh parameters from ``seed`` without touching the global RNG (it is restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


@torch.no_grad()
def soft_labels(model: nn.Module, x: Tensor, temperature: float, batch_size: int = 1000) -> Tensor:
    return torch.cat([F.softmax(model(x[i:i + batch_size]) / temperature, 1) for i in range(0, len(x), batch_size)])


def train_distilled(model: nn.Module, x: Tensor, y: Tensor, *, temperature: float = 100.0, epochs: int = 5,
                    lr: float = 1e-3, batch_size: int = 128, warm_start: bool = True,
                    generator: torch.Generator | None = None) -> nn.Module:
    """Return the distilled student (deployed at T = 1). ``model`` is not changed (it is deep-copied).

    With ``warm_start=False`` teacher and student start from fresh initialisations of ``model``'s layers.
    """
    g = generator if generator is not None else seeded(0)
    teacher = copy.deepcopy(model).requires_grad_(True)
    init_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    if not warm_start:
        _reinit(teacher, init_seed)
    num_classes = int(teacher(x[:1]).shape[1])
    teacher = _fit(teacher, x, F.one_hot(y, num_classes).float(), temperature, epochs, lr, batch_size, g)
    soft = soft_labels(teacher, x, temperature)
    student = copy.deepcopy(teacher)  # same architecture; the paper re-initialises, a warm start is cheaper
    if not warm_start:
        _reinit(student, init_seed + 1)
    return _fit(student, x, soft, temperature, epochs, lr, batch_size, g).requires_grad_(False)


@register_defense("distillation", paper=PAPER, kind="distillation", randomized=False, differentiable=True,
                  needs_data=True, clean_drop=0.05,
                  description="Defensive distillation at temperature T (paper: up to 100), deployed at T=1; "
                              "trains a teacher and a student on `data`.")
def build_distillation(model: nn.Module, *, data: Split | None = None, temperature: float = 100.0, epochs: int = 2,
                       train_points: int = 10000, lr: float = 1e-3, warm_start: bool = True, seed: int = 0
                       ) -> nn.Module:
    if data is None:
        from bastion.errors import InvalidInputError

        raise InvalidInputError("Distillation trains a student: pass data=Split(x, y) (the CLI passes the model's "
                                "training split).")
    x, y = data.x[:train_points], data.y[:train_points]
    return train_distilled(model, x, y, temperature=temperature, epochs=epochs, lr=lr, warm_start=warm_start,
                           generator=seeded(seed))
