"""JBDA (Papernot et al. 2017) and its T-RND variant (Juuti et al. 2019): the Jacobian step against its closed form
on a linear substitute, the synthetic points' geometry, the budget cap, and JBDA's gain over the seed set alone."""

from __future__ import annotations

import torch
from torch import nn

from bastion.stealing import STEAL_ATTACKS
from bastion.stealing.attacks._tools import class_gradient
from bastion.stealing.attacks.jbda_trnd import random_other_class
from bastion.stealing.metrics import agreement, predict


def test_class_gradient_is_the_jacobian_row_of_a_linear_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    x, classes = torch.rand(5, 1, 2, 3, generator=g), torch.tensor([0, 1, 2, 3, 1])
    w = model[1].weight
    p = torch.softmax(model(x), 1)
    expected = w[classes] - p @ w  # d log p_c / dx = w_c - sum_j p_j w_j
    assert torch.allclose(class_gradient(model, x, classes).flatten(1), expected, atol=1e-6)
    jac_row = p[torch.arange(5), classes, None] * expected  # dF_c/dx = p_c (w_c - sum_j p_j w_j): same sign
    assert torch.equal(class_gradient(model, x, classes).flatten(1).sign(), jac_row.sign())


def test_random_other_class_is_never_the_label_and_covers_the_others() -> None:
    labels = torch.arange(10).repeat(500)
    targets = random_other_class(labels, 10, torch.Generator().manual_seed(0))
    assert not bool((targets == labels).any())
    counts = torch.bincount(targets[labels == 3], minlength=10)
    assert counts[3] == 0 and bool((counts[torch.arange(10) != 3] > 30).all())  # ~55 each of 9 classes


def _new_points_step_from_the_seed(view, seed: torch.Tensor, lam: float) -> None:
    x, _ = view.answered()
    new = x[seed.shape[0]:]
    assert bool((new >= 0).all() and (new <= 1).all())
    nearest = torch.cdist(new.flatten(1), seed.flatten(1), p=float("inf")).min(1).values
    assert bool((nearest <= lam + 1e-6).all())  # one signed step of lam (or less, where clipped) from a seed point
    assert bool((nearest > 0).all())


def test_jbda_steps_lambda_from_its_seed_and_stops_at_the_budget(victim, data, make_view) -> None:
    view = make_view(victim, 150)
    STEAL_ATTACKS.get("jbda").fn(view, rounds=3)
    assert view.api.used == 150  # 100 seed points, then 50 of the 100 augmentations (the budget's cap)
    _new_points_step_from_the_seed(view, data.seed, 0.1)


def test_trnd_steps_lambda_from_its_seed(victim, data, make_view) -> None:
    view = make_view(victim, 180)
    STEAL_ATTACKS.get("jbda-trnd").fn(view, rounds=1)
    assert view.api.used == 180
    _new_points_step_from_the_seed(view, data.seed, 0.1)


def test_jbda_raises_fidelity_over_the_seed_only_copy(victim, data, make_view) -> None:
    scores = {}
    view = make_view(victim, 800, checkpoints=(100, 800))
    view.on_checkpoint = lambda q, x, a: scores.setdefault(q, fidelity(view.copy(x, a), victim, data))
    STEAL_ATTACKS.get("jbda").fn(view)
    assert set(scores) == {100, 800}  # 100 -> 200 -> 400 -> 800 in three substitute epochs
    assert scores[800] > scores[100] + 0.05, scores


def fidelity(copy: nn.Module, victim: nn.Module, data) -> float:
    return agreement(predict(copy, data.test.x), predict(victim, data.test.x))
