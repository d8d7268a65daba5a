"""The case the detector and filter tests share: BadNets on 5% of the MNIST training set (all-to-one, target 0,
seed 0) and the model the pipeline trains on it, built once per test session (training is most of their time)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bastion.data.base import Split
from bastion.poisoning.attacks.badnets import badnets
from bastion.poisoning.base import AttackerView, DefenderView, PoisonedSet

_built: dict[tuple[int, int], tuple[PoisonedSet, nn.Module]] = {}


def badnets_case(mnist: Any, recipe: Any) -> tuple[PoisonedSet, nn.Module]:
    """(poisoned set, model trained on it) for the session's ``mnist`` and ``recipe`` fixtures."""
    key = (id(mnist), id(recipe))
    if key not in _built:
        poisoned = badnets(AttackerView(mnist.train, mnist.test, mnist.spec, 0.05, 0,
                                        torch.Generator().manual_seed(0), lambda: None))
        _built[key] = poisoned, recipe.fit(poisoned.train, mnist.val, mnist.spec)
    return _built[key]


def view_of(mnist: Any, recipe: Any, train: Split, model: nn.Module, seed: int = 0) -> DefenderView:
    """What the defender gets: the received set, the clean validation set, the received model, the recipe."""
    return DefenderView(train, mnist.val, mnist.spec, model, recipe.fitter(mnist.val, mnist.spec),
                        torch.Generator().manual_seed(seed))
