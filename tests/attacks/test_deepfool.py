"""DeepFool: closed form on linear models and success on a digits MLP."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.deepfool import TINY, deepfool
from bastion.threat import LpThreat


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_model_lands_at_the_closed_form_times_overshoot(helpers, classes: int, norm: str) -> None:
    model, x = helpers.linear_model(classes), helpers.linear_points()
    y = model(x).argmax(1)
    adv = deepfool(model, x, y, LpThreat(norm, 1.0, **helpers.BOX))
    assert helpers.success(model, adv, y).all()
    found, exact = LpThreat(norm, 1.0).norm_of(adv - x), helpers.minimal_norm(model, x, norm)
    # one exact step: the distance plus the authors' 1e-4, times the 2 % overshoot
    assert (found >= exact).all() and (found <= (exact + TINY) * 1.02 + 1e-6).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_no_backward_passes_once_every_point_is_adversarial(helpers, norm: str) -> None:
    from bastion.evaluation.runner import run_attack

    model, x = helpers.linear_model(5), helpers.linear_points()
    y = model(x).argmax(1)
    result = run_attack(model, x, y, LpThreat(norm, 1.0, **helpers.BOX), "deepfool")
    assert bool(result.success.all())
    # a linear model breaks in one exact step: the gradients at the start (4 other classes), then a forward pass
    # that finds every point adversarial and spends no gradients
    assert result.counts.forward.tolist() == [2] * len(y) and result.counts.backward.tolist() == [4] * len(y)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_breaks_nearly_every_digit(digits_mlp, helpers, norm: str) -> None:
    model, x, y = digits_mlp
    x0 = x.clone()
    adv = deepfool(model, x, y, LpThreat(norm, 1.0))
    assert torch.equal(x, x0)
    assert helpers.success(model, adv, y).float().mean() >= 0.95
    assert adv.min() >= 0 and adv.max() <= 1


def test_targeted(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    targets = (y + 3) % 10
    adv = deepfool(model, x, targets, LpThreat("l2", 1.0), targeted=True)
    assert helpers.success(model, adv, targets, targeted=True).float().mean() >= 0.9


def test_few_candidates_and_unbroken_points_are_returned_unchanged(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    adv = deepfool(model, x, y, LpThreat("l2", 1.0), candidates=2, max_iter=1)
    failed = ~helpers.success(model, adv, y)
    assert failed.any()
    assert torch.equal(adv[failed], x[failed])
