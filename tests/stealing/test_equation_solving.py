"""Equation-solving (Tramèr et al. 2016) against a multinomial logistic victim: the closed form recovers it; and
the acceptance test's other half, a linear thief with knockoff-random queries copies it too."""

from __future__ import annotations

import torch
from torch import nn

from bastion.stealing import STEAL_ATTACKS, CopyRecipe, QueryAPI, ThiefView, VictimSpec
from bastion.stealing.attacks.equation_solving import solve_linear
from bastion.stealing.metrics import agreement, predict

SPEC = VictimSpec((1, 8, 8), 5)


def linear_victim(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(5, 64, generator=g))
        model[1].bias.copy_(torch.randn(5, generator=g))
    return model.eval()


def uniform(n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, *SPEC.shape), generator=torch.Generator().manual_seed(seed))


def view_of(backend, budget: int, recipe: CopyRecipe, pool: torch.Tensor | None = None) -> ThiefView:
    pool = uniform(3000, 1) if pool is None else pool
    return ThiefView(QueryAPI(backend, budget=budget), pool, pool[:0], SPEC, lambda x, a: recipe.fit(x, a, SPEC),
                     torch.Generator().manual_seed(0))


LINEAR = CopyRecipe(arch="mlp", arch_kwargs={"depth": 0}, epochs=1, min_steps=1500, batch_size=256, lr=3e-2)


def test_unlimited_queries_recover_a_linear_victim_in_closed_form() -> None:
    victim = linear_victim()
    view = view_of(victim, 10_000, LINEAR)
    STEAL_ATTACKS.get("equation-solving").fn(view, oversample=2.0)
    assert view.api.used == 2 * 65  # d + 1 = 65 unknowns per class, twice over; the rest of the budget unspent
    copy = view.copy(*view.answered())
    w, b = victim[1].weight, victim[1].bias
    assert torch.allclose(copy[1].weight, w - w[0], atol=1e-4)  # W up to the softmax's shift (row 0 set to zero)
    assert torch.allclose(copy[1].bias, b - b[0], atol=1e-4)
    test = uniform(5000, 2)
    assert agreement(predict(copy, test), predict(victim, test)) == 1.0
    assert torch.allclose(torch.softmax(copy(test), 1), torch.softmax(victim(test), 1), atol=1e-4)


def test_the_solution_is_exact_from_d_plus_one_queries() -> None:
    victim = linear_victim(3)
    x = uniform(65, 4)
    copy = solve_linear(x, torch.softmax(victim(x), 1))
    w = victim[1].weight
    assert torch.allclose(copy[1].weight, w - w[0], atol=1e-3)


def test_knockoff_random_with_a_linear_thief_copies_a_linear_victim() -> None:
    victim = linear_victim()
    view = view_of(victim, 3000, LINEAR)
    STEAL_ATTACKS.get("knockoff-random").fn(view)
    copy = view.copy(*view.answered())
    test = uniform(5000, 2)
    assert agreement(predict(copy, test), predict(victim, test)) >= 0.99


def test_label_answers_fall_back_to_training_on_uniform_queries() -> None:
    victim = linear_victim()
    fitted = []
    view = view_of(lambda x: victim(x).argmax(1), 1000, LINEAR)
    view.fit = lambda x, a: fitted.append(a.dtype) or LINEAR.fit(x, a, SPEC)
    STEAL_ATTACKS.get("equation-solving").fn(view)
    assert view.api.used == 1000 and view.answers == "labels"  # labels: the whole budget
    copy = view.copy(*view.answered())
    assert fitted == [torch.long]  # the recipe on the labels, not the log-odds solution
    test = uniform(2000, 2)
    assert agreement(predict(copy, test), predict(victim, test)) > 0.5
