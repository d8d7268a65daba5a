"""Anti-Backdoor Learning (Li et al. 2021, "Anti-Backdoor Learning: Training Clean Models on Poisoned Data",
NeurIPS): backdoor examples are learnt much faster than clean ones, so a model trained with a loss held at a floor
``gamma`` (clean examples cannot go below it, backdoor examples still fall to ~0) exposes them as the
lowest-loss points; they are isolated, and the backdoor is unlearnt by gradient ascent on them.

Stages: (1) isolation: train a fresh model with the paper's local gradient ascent (LGA) loss
``sign(L - gamma) * L`` on every mini-batch (``gamma`` 0.5, the paper's); (2) isolate the ``isolation_ratio``
(1%, the paper's) of training points with the lowest loss under that model; (3) keep training with plain
cross-entropy on the rest; (4) unlearn: gradient ascent on the isolated points (the paper's 5e-4 learning rate,
with SGD and momentum 0.9).

The model: a stage-"train" defense gets no model and ``view.fit`` is the pipeline's recipe as a black box (it
trains on a set, it cannot be told to use another loss). So ABL builds its own model with
``Recipe(arch=arch, arch_kwargs=arch_kwargs).build(view.spec)`` (weights seeded from ``view.generator``) and
trains it with Adam at the recipe's learning rate and batch size. ``arch`` and ``arch_kwargs`` must match the
pipeline's architecture for a fair comparison; the defaults, "cnn" with no keyword arguments, are the default
recipe's (``arch_kwargs=None`` is the architecture's own defaults; a pipeline on a narrower CNN, such as the
tests' ``{"width": 16, "hidden": 64}``, passes the same keywords here).

Scaled for a CPU: the paper isolates after 20 epochs and trains for 100 in all with 20 epochs of unlearning on
CIFAR-10; here 3 isolation epochs, 2 more epochs on the rest and 5 unlearning epochs on the isolated points
(mini-batches of 16, so the few isolated points of a small set still give several steps). The BadNets backdoor
on MNIST is learnt within the first epoch, which is what isolation needs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView, DefenseResult, register_poison_defense
from bastion.poisoning.metrics import accuracy
from bastion.poisoning.recipe import Recipe


def _check(gamma: float, isolation_ratio: float, isolation_epochs: int, epochs: int, unlearn_epochs: int,
           lr: float, unlearn_lr: float, batch_size: int) -> None:
    if gamma < 0:
        raise InvalidInputError(f"abl gamma={gamma} is a loss floor; use gamma >= 0 (the paper's 0.5).")
    if not 0 < isolation_ratio < 1:
        raise InvalidInputError(f"abl isolation_ratio={isolation_ratio} is out of range; use 0 < ratio < 1 "
                                "(the paper's 0.01).")
    if isolation_epochs < 1 or epochs < 0 or unlearn_epochs < 0 or batch_size < 1:
        raise InvalidInputError("abl needs isolation_epochs >= 1, epochs >= 0, unlearn_epochs >= 0 and "
                                "batch_size >= 1.")
    if lr <= 0 or unlearn_lr <= 0:
        raise InvalidInputError(f"abl needs lr > 0 and unlearn_lr > 0 (got {lr}, {unlearn_lr}).")


def lga_loss(logits: Tensor, y: Tensor, gamma: float) -> Tensor:
    """The paper's local gradient ascent: ``sign(L - gamma) * L`` on the mini-batch mean cross-entropy."""
    loss = F.cross_entropy(logits, y)
    return torch.sign(loss - gamma) * loss


def train_epochs(model: nn.Module, data: Split, opt: torch.optim.Optimizer, epochs: int, batch_size: int,
                 generator: torch.Generator, loss_fn: Any) -> None:
    """``epochs`` passes over ``data`` in shuffled mini-batches, minimising ``loss_fn(logits, y)``."""
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=generator).split(batch_size):
            loss = loss_fn(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def per_point_loss(model: nn.Module, data: Split, batch_size: int = 1000) -> Tensor:
    model.eval()
    return torch.cat([F.cross_entropy(model(data.x[i:i + batch_size]), data.y[i:i + batch_size], reduction="none")
                      for i in range(0, len(data), batch_size)])


@register_poison_defense("abl", stage="train", paper="Li et al. 2021")
def abl(view: DefenderView, *, arch: str = "cnn", arch_kwargs: dict[str, Any] | None = None, gamma: float = 0.5,
        isolation_ratio: float = 0.01, isolation_epochs: int = 3, epochs: int = 2, unlearn_epochs: int = 5,
        lr: float = 1e-3, unlearn_lr: float = 5e-4, batch_size: int = 128) -> DefenseResult:
    """Train a fresh ``arch`` model (built with ``arch_kwargs``) with LGA, isolate the lowest-loss points, train on
    the rest, unlearn the isolated ones. ``scores``: minus each point's loss after the isolation stage;
    ``flagged``: the isolated."""
    _check(gamma, isolation_ratio, isolation_epochs, epochs, unlearn_epochs, lr, unlearn_lr, batch_size)
    seed = int(torch.randint(2**31 - 1, (1,), generator=view.generator))
    model = Recipe(arch=arch, seed=seed, arch_kwargs=dict(arch_kwargs or {})).build(view.spec)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    train_epochs(model, view.train, opt, isolation_epochs, batch_size, view.generator,
                 lambda logits, y: lga_loss(logits, y, gamma))
    losses = per_point_loss(model, view.train)
    n_iso = max(1, round(isolation_ratio * len(view.train)))
    flagged = torch.zeros(len(view.train), dtype=torch.bool)
    flagged[losses.argsort()[:n_iso]] = True
    val_isolation = accuracy(model, view.val)
    rest, isolated = (Split(view.train.x[m], view.train.y[m]) for m in (~flagged, flagged))
    train_epochs(model, rest, opt, epochs, batch_size, view.generator, F.cross_entropy)
    val_trained = accuracy(model, view.val)
    unlearn_opt = torch.optim.SGD(model.parameters(), lr=unlearn_lr, momentum=0.9)
    train_epochs(model, isolated, unlearn_opt, unlearn_epochs, 16, view.generator,
                 lambda logits, y: -F.cross_entropy(logits, y))
    return DefenseResult(model=model, scores=-losses, flagged=flagged, info={
        "isolated": n_iso, "seed": seed, "val_accuracy_isolation": val_isolation,
        "val_accuracy_trained": val_trained, "val_accuracy_after": accuracy(model, view.val)})
