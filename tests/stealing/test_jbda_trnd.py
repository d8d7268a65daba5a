"""JBDA with targeted randomised steps, T-RND (Juuti et al. 2019): the targets, the synthetic points' geometry,
and the gain over the seed set alone."""

from __future__ import annotations

import torch
from tests.stealing.test_jbda import gain_over_the_seeds, new_points_step_from_the_seed

from bastion.stealing import STEAL_ATTACKS
from bastion.stealing.attacks.jbda_trnd import random_other_class


def test_random_other_class_is_never_the_label_and_covers_the_others() -> None:
    labels = torch.arange(10).repeat(500)
    targets = random_other_class(labels, 10, torch.Generator().manual_seed(0))
    assert not bool((targets == labels).any())
    counts = torch.bincount(targets[labels == 3], minlength=10)
    assert counts[3] == 0 and bool((counts[torch.arange(10) != 3] > 30).all())  # ~55 each of 9 classes


def test_trnd_steps_lambda_from_its_seed(victim, data, make_view) -> None:
    view = make_view(victim, 180)
    STEAL_ATTACKS.get("jbda-trnd").fn(view, rounds=1)
    assert view.api.used == 180
    new_points_step_from_the_seed(view, data.seed, 0.1)


def test_trnd_raises_fidelity_over_the_seed_only_copy(victim, data, make_view) -> None:
    assert gain_over_the_seeds("jbda-trnd", victim, data, make_view) > 0.02
