"""FMN: closed form on linear models and success on a digits MLP."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.deepfool import deepfool
from bastion.attacks.fmn import fmn
from bastion.threat import LpThreat


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_linear_model_reaches_the_closed_form(helpers, classes: int, norm: str) -> None:
    model, x = helpers.linear_model(classes), helpers.linear_points()
    y = model(x).argmax(1)
    adv = fmn(model, x, y, LpThreat(norm, 1.0, **helpers.BOX))
    assert helpers.success(model, adv, y).all()
    ratio = LpThreat(norm, 1.0).norm_of(adv - x) / helpers.minimal_norm(model, x, norm)
    assert (ratio >= 0.999).all()
    assert ratio.median() <= 1.01 and ratio.max() <= 1.1


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_breaks_every_digit(digits_mlp, helpers, norm: str) -> None:
    model, x, y = digits_mlp
    x0 = x.clone()
    adv = fmn(model, x, y, LpThreat(norm, 1.0))
    assert torch.equal(x, x0)
    assert helpers.success(model, adv, y).float().mean() >= 0.95
    assert adv.min() >= 0 and adv.max() <= 1


def test_smaller_than_deepfool_on_digits(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    threat = LpThreat("l2", 1.0)
    a, b = fmn(model, x, y, threat), deepfool(model, x, y, threat)
    both = helpers.success(model, a, y) & helpers.success(model, b, y)
    assert both.float().mean() >= 0.95
    assert (threat.norm_of(a - x) / threat.norm_of(b - x))[both].median() <= 1.01


def test_targeted(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    targets = (y + 5) % 10
    adv = fmn(model, x, targets, LpThreat("linf", 1.0), targeted=True)
    assert helpers.success(model, adv, targets, targeted=True).float().mean() >= 0.95


def test_l2_iterate_follows_the_radius_beyond_its_step_sizes(helpers) -> None:
    """In L2 the iterate is rescaled onto the sphere of the adaptive radius (the reference code's projection), so a
    boundary farther away than all steps together is still reached: five steps of at most 0.5 move a ball-projected
    iterate by at most 2.5, and every boundary here is farther than 4."""
    model, x = helpers.linear_model(2), helpers.linear_points()
    with torch.no_grad():  # push each point away from the boundary along its own class's side
        w = model.weight[0] - model.weight[1]
        y = model(x).argmax(1)
        side = torch.where(y == 0, 1.0, -1.0)[:, None]
        x = x + side * w / w.norm() * 6.0
    far = helpers.minimal_norm(model, x, "l2")
    assert (far > 4.0).all()
    adv = fmn(model, x, y, LpThreat("l2", 1.0, **helpers.BOX), steps=5, alpha_init=0.5)
    assert helpers.success(model, adv, y).all()
    assert (LpThreat("l2", 1.0).norm_of(adv - x) / far).max() <= 1.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_box_blocked_gradient_coordinates_are_exactly_the_ones_at_a_bound(dtype: torch.dtype) -> None:
    """FMN drops a gradient coordinate only where the point sits on a box bound and the gradient points out;
    the clamp form agrees with the bool-mask definition, bounds other than [0, 1] and the mask included."""
    from bastion.attacks.fmn import _movable

    g = torch.Generator().manual_seed(0)
    lower, upper = -0.3, 0.7
    x = (torch.rand(4, 1, 6, 6, generator=g) * (upper - lower) + lower).to(dtype)
    x.view(-1)[::3] = lower
    x.view(-1)[1::5] = upper
    x.view(-1)[2::7] = upper - 1e-3  # near a bound but inside: untouched
    grad = torch.randn(x.shape, generator=g).to(dtype) * 100
    threat = LpThreat("l2", 1.0, lower=lower, upper=upper)
    lo, hi = torch.tensor(lower, dtype=dtype), torch.tensor(upper, dtype=dtype)
    blocked = ((x >= hi) & (grad > 0)) | ((x <= lo) & (grad < 0))
    want = grad.masked_fill(blocked, 0.0)
    assert blocked.any() and (~blocked).any()
    assert torch.equal(_movable(grad, x, threat, None), want)
    keep = (torch.rand(1, 1, 6, 6, generator=g) > 0.5).to(dtype).expand_as(x)
    assert torch.equal(_movable(grad, x, threat, keep), want * keep)
