"""Label-only active learning (ActiveThief, Pal et al. 2020): what each strategy picks on known scores, and a run
on the MNIST victim that asks each pool image at most once and trains on labels."""

from __future__ import annotations

import pytest
import torch
from tests.stealing.conftest import rows_of
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.stealing import STEAL_ATTACKS, QueryAPI, ThiefView, VictimSpec
from bastion.stealing.attacks.active_label import k_center, select

# pool "images" are single numbers i; the copy's logits for i are LOGITS[i]
LOGITS = torch.tensor([[5.0, 0.0, 0.0],   # sure
                       [1.0, 0.5, 0.0],   # spread over three classes: the largest entropy
                       [2.0, 1.9, -9.0],  # nearly a tie of two classes: the smallest margin, less entropy than row 1
                       [0.0, 4.0, 0.0],   # sure
                       [3.0, 0.0, 0.0]])


class Lookup(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return LOGITS[x.flatten(1)[:, 0].long()]


def tiny_view() -> ThiefView:
    pool = torch.arange(5.0).view(5, 1, 1, 1)
    return ThiefView(QueryAPI(lambda x: x, budget=1), pool, pool[:0], VictimSpec((1, 1, 1), 3), lambda x, a: Lookup(),
                     torch.Generator().manual_seed(0))


def test_entropy_and_margin_pick_the_least_certain_unasked_points() -> None:
    view, none = tiny_view(), torch.zeros(5, dtype=torch.bool)
    assert select(Lookup(), view, none, 1, "entropy").tolist() == [1]
    assert select(Lookup(), view, none, 1, "margin").tolist() == [2]
    asked = torch.tensor([False, True, False, False, False])
    assert select(Lookup(), view, asked, 2, "entropy").tolist() == [2, 4]  # never an asked point


def test_k_center_picks_the_farthest_point_from_the_centers_each_time() -> None:
    points = torch.tensor([[0.0], [1.0], [10.0], [3.0], [6.0]])
    centers = torch.tensor([True, False, False, False, False])
    assert k_center(points, centers, 3).tolist() == [2, 4, 3]  # 10 (10 from 0), 6 (4 from 10), 3 (3 from 0 and 6)


def test_an_unknown_strategy_is_one_clear_line(victim, make_view) -> None:
    with pytest.raises(InvalidInputError, match="no strategy 'confidence'"):
        STEAL_ATTACKS.get("active-label").fn(make_view(victim, 10), strategy="confidence")


@pytest.mark.parametrize("strategy", ["entropy", "k-center"])
def test_spends_the_budget_on_distinct_pool_images_with_labels(strategy, victim, data, make_view) -> None:
    view = make_view(victim, 250)
    labels_seen = []
    fit = view.fit
    view.fit = lambda x, a: labels_seen.append(a.dim()) or fit(x, a)
    STEAL_ATTACKS.get("active-label").fn(view, strategy=strategy, rounds=2)
    x, _ = view.answered()
    assert view.api.used == 250
    distance, which = rows_of(x, data.pool)
    assert bool((distance == 0).all()) and which.unique().numel() == 250  # pool images, none asked twice
    assert labels_seen == [1, 1]  # each round's copy trained on labels, though the victim gives probabilities
