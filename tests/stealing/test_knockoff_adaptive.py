"""KnockoffNets' adaptive strategy (Orekondy et al. 2019): the gradient bandit, the rewards and their
standardisation on known values, k-means actions for an unlabelled pool, and a run on the MNIST victim."""

from __future__ import annotations

import torch

from bastion.stealing import STEAL_ATTACKS, CopyRecipe
from bastion.stealing.attacks.knockoff_adaptive import (
    GradientBandit,
    RunningStandardiser,
    certainty,
    diversity,
    kmeans,
)
from bastion.stealing.metrics import agreement, predict


def test_the_bandit_learns_to_prefer_the_rewarding_action() -> None:
    bandit, g = GradientBandit(5), torch.Generator().manual_seed(0)
    chosen = []
    for _ in range(300):
        action = bandit.sample(g)
        chosen.append(action)
        bandit.update(action, 1.0 if action == 2 else 0.0)
    assert float(bandit.policy()[2]) > 0.6  # from 0.2
    assert chosen[-100:].count(2) > chosen[:100].count(2)


def test_an_exhausted_action_is_never_sampled() -> None:
    bandit, g = GradientBandit(3), torch.Generator().manual_seed(0)
    bandit.available[1] = False
    assert float(bandit.policy()[1]) == 0.0
    assert 1 not in {bandit.sample(g) for _ in range(200)}


def test_rewards_on_known_answers() -> None:
    y = torch.tensor([[0.7, 0.2, 0.1]])
    assert abs(float(certainty(y)) - 0.5) < 1e-6  # top-1 minus top-2
    recent = torch.tensor([[1.0, 0.0, 0.0], [0.7, 0.2, 0.1]])  # mean (0.85, 0.1, 0.05)
    assert abs(float(diversity(y, recent)) - 0.15) < 1e-6  # only the excess over the mean counts
    assert float(certainty(torch.eye(3))) == 1.0  # one-hot (label) answers: always 1


def test_standardised_rewards() -> None:
    s = RunningStandardiser(2)
    assert s.standardise(torch.tensor([1.0, 0.0])).tolist() == [0.0, 0.0]  # no spread yet
    assert s.standardise(torch.tensor([1.0, 2.0])).tolist() == [0.0, 1.0]  # constant -> 0; (2 - 1) / 1


def test_kmeans_finds_separated_groups() -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(50)
    x = centers[truth] + 0.5 * torch.randn(150, 2, generator=g)
    found = kmeans(x, 3, torch.Generator().manual_seed(1))
    pairs = {(int(a), int(b)) for a, b in zip(truth, found, strict=True)}
    assert len(pairs) == 3 and len({b for _, b in pairs}) == 3  # the same partition up to names


def test_a_run_copies_the_victim_with_pool_labels_or_clusters(victim, data, make_view) -> None:
    recipe = CopyRecipe(arch="cnn", arch_kwargs={"width": 8, "hidden": 64}, epochs=5, min_steps=150, batch_size=128)
    truth = predict(victim, data.test.x)
    chance = float(torch.bincount(truth).max()) / truth.numel()  # always answering the victim's commonest class
    for labelled in (True, False):
        view = make_view(victim, 2000, recipe=recipe)
        if not labelled:
            view.pool_labels = None  # 10 k-means clusters of the pool are the actions
        STEAL_ATTACKS.get("knockoff-adaptive").fn(view)
        assert view.api.used == 2000
        copy = view.copy(*view.answered())
        assert agreement(predict(copy, data.test.x), truth) > chance + 0.1
