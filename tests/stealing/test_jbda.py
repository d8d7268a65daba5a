"""JBDA (Papernot et al. 2017): the Jacobian step against its closed form on a linear substitute, the synthetic
points' geometry, the budget cap, and the gain over the seed set alone."""

from __future__ import annotations

import torch
from tests.stealing.conftest import SPEC
from torch import nn

from bastion.stealing import STEAL_ATTACKS, CopyRecipe
from bastion.stealing.attacks._tools import class_gradient
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


def new_points_step_from_the_seed(view, seed: torch.Tensor, lam: float) -> None:
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
    new_points_step_from_the_seed(view, data.seed, 0.1)


# the copies need enough training for the synthetic points to count: 200 steps at least, 20 epochs on larger sets
RECIPE = CopyRecipe(arch="cnn", arch_kwargs={"width": 8, "hidden": 64}, epochs=20, min_steps=200, batch_size=128)


def test_jbda_raises_fidelity_over_the_seed_only_copy(victim, data, make_view) -> None:
    assert gain_over_the_seeds("jbda", victim, data, make_view) > 0.02


_SEEDS_ONLY: dict[tuple[int, int], float] = {}


def seeds_only_fidelity(victim: nn.Module, data) -> float:
    """Fidelity of the recipe's copy of the 100 seeds alone, trained once per (victim, data) in a session (the JBDA
    and T-RND gain tests share it: the same recipe, seeds and answers give the same copy)."""
    key = (id(victim), id(data))
    if key not in _SEEDS_ONLY:
        seeds_only = RECIPE.fit(data.seed, torch.softmax(victim(data.seed), 1).detach(), SPEC)
        _SEEDS_ONLY[key] = fidelity(seeds_only, victim, data)
    return _SEEDS_ONLY[key]


def gain_over_the_seeds(name: str, victim: nn.Module, data, make_view) -> float:
    """Fidelity of the attack's copy at 800 queries minus that of the recipe's copy of the 100 seeds alone."""
    scores = []
    view = make_view(victim, 800, checkpoints=(800,), recipe=RECIPE)
    view.on_checkpoint = lambda q, x, a: scores.append(fidelity(view.copy(x, a), victim, data))
    STEAL_ATTACKS.get(name).fn(view)  # 100 -> 200 -> 400 -> 800 in three substitute epochs
    assert len(scores) == 1
    return scores[0] - seeds_only_fidelity(victim, data)


def fidelity(copy: nn.Module, victim: nn.Module, data) -> float:
    return agreement(predict(copy, data.test.x), predict(victim, data.test.x))
