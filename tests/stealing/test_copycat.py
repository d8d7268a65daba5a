"""Copycat CNN (Correia-Silva et al. 2018): pool images only, and a copy trained on hard labels even when the
victim gives probabilities."""

from __future__ import annotations

import torch
from tests.stealing.conftest import rows_of

from bastion.stealing import STEAL_ATTACKS


def test_queries_come_from_the_pool_and_the_copy_learns_hard_labels(victim, data, make_view) -> None:
    view = make_view(victim, 200)
    trained_on = []
    fit = view.fit
    view.fit = lambda x, a: trained_on.append(a) or fit(x, a)
    STEAL_ATTACKS.get("copycat").fn(view)
    x, answers = view.answered()
    assert view.answers == "probs" and answers.shape == (200, 10)  # the victim gave probabilities...
    assert bool((rows_of(x, data.pool).values == 0).all())  # pool images
    view.copy(x, answers)
    assert len(trained_on) == 1 and torch.equal(trained_on[0], answers.argmax(1))  # ...the copy saw their argmax


def test_problem_domain_images_are_asked_first(victim, data, make_view) -> None:
    view = make_view(victim, 150)
    STEAL_ATTACKS.get("copycat").fn(view, problem_domain=True)
    x, _ = view.answered()
    assert view.api.used == 150
    distance, which = rows_of(x[:100], data.seed)
    assert bool((distance == 0).all()) and which.unique().numel() == 100  # all of the seed set, once each
