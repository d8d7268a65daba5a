"""Every registered extraction attack keeps the contract: it stays within its budget (the API refuses a query past
it, so an attack that asks too many fails here), it is deterministic for a seed (and draws from the view's
generator, so another seed asks other queries), and it runs on a victim that answers labels only, where its copy is
built from labels."""

from __future__ import annotations

import pytest
import torch

from bastion.stealing import STEAL_ATTACKS, CopyRecipe, ThiefView
from bastion.stealing.metrics import predict

BUDGET = 300
# the few rounds that keep the whole file fast (every other parameter at the paper's default)
SMALL: dict[str, dict] = {"jbda": {"rounds": 2}, "jbda-trnd": {"rounds": 2}, "active-label": {"rounds": 2}}


@pytest.fixture(scope="module")
def tiny_recipe() -> CopyRecipe:
    return CopyRecipe(arch="cnn", arch_kwargs={"width": 4, "hidden": 16}, epochs=1, min_steps=5, batch_size=64)


def attack(name: str, backend, make_view, recipe: CopyRecipe, budget: int = BUDGET, seed: int = 0) -> ThiefView:
    view = make_view(backend, budget, seed=seed, recipe=recipe)
    STEAL_ATTACKS.get(name).fn(view, **SMALL.get(name, {}))
    return view


@pytest.mark.parametrize("name", STEAL_ATTACKS.names())
def test_budget_determinism_and_labels(name, victim, data, make_view, tiny_recipe) -> None:
    first = attack(name, victim, make_view, tiny_recipe)
    assert 0 < first.api.used <= BUDGET
    again = attack(name, victim, make_view, tiny_recipe)
    assert again.api.transcript.digests == first.api.transcript.digests  # the same queries, batch by batch
    other = attack(name, victim, make_view, tiny_recipe, seed=1)
    assert other.api.transcript.digests != first.api.transcript.digests  # the view's generator drives the draws

    labels = attack(name, lambda x: victim(x).argmax(1), make_view, tiny_recipe)
    assert labels.answers == "labels" and 0 < labels.api.used <= BUDGET
    x, answers = labels.answered()
    assert answers.dtype == torch.long and answers.dim() == 1
    assert predict(labels.copy(x, answers), data.test.x[:20]).shape == (20,)


@pytest.mark.parametrize("name", STEAL_ATTACKS.names())
def test_a_tiny_budget_is_not_passed(name, victim, make_view, tiny_recipe) -> None:
    view = attack(name, victim, make_view, tiny_recipe, budget=7)
    assert 0 < view.api.used <= 7
    view.finish()
