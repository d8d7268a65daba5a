"""Carlini & Wagner L2, and PGD with the C&W margin loss."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.cw import carlini_wagner_l2
from bastion.attacks.losses import margin
from bastion.attacks.pgd import pgd
from bastion.threat import LpThreat

FAST = {"binary_search_steps": 6, "max_iterations": 200}  # test budget; the defaults are heavier


def _centred(helpers, classes: int) -> tuple:
    """Points in [0.4, 0.6] and a [0, 1] box, the range the tanh change of variables is meant for."""
    model, x = helpers.linear_model(classes), 0.5 + 0.1 * helpers.linear_points()
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize("classes", [2, 5])
def test_linear_model_reaches_the_closed_form(helpers, classes: int) -> None:
    model, x, y = _centred(helpers, classes)
    adv = carlini_wagner_l2(model, x, y, LpThreat("l2", 1.0), **FAST)
    opt = helpers.minimal_norm(model, x, "l2")
    fits = ((x - adv).abs() < 0.39).all(1)  # the box never bound the optimum
    assert helpers.success(model, adv, y).all()
    ratio = (adv - x).norm(dim=1) / opt
    assert (ratio >= 0.999).all() and ratio[fits].median() <= 1.03 and ratio[fits].max() <= 1.1


def test_confidence_is_the_required_margin(helpers) -> None:
    model, x, y = _centred(helpers, 5)
    adv = carlini_wagner_l2(model, x, y, LpThreat("l2", 1.0), confidence=2.0, **FAST)
    assert (margin(model(adv), y) >= 2.0 - 1e-4).all()


def test_defaults_break_every_digit(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    x, y = x[:16], y[:16]
    x0 = x.clone()
    adv = carlini_wagner_l2(model, x, y, LpThreat("l2", 1.0))
    assert torch.equal(x, x0)
    assert helpers.success(model, adv, y).float().mean() >= 0.95
    assert adv.min() >= 0 and adv.max() <= 1


def test_targeted(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    targets = (y + 1) % 10
    adv = carlini_wagner_l2(model, x, targets, LpThreat("l2", 1.0), targeted=True, **FAST)
    # Pixels at 0 or 1 barely move in tanh space within 200 Adam steps, so a few targets stay out of reach.
    assert helpers.success(model, adv, targets, targeted=True).float().mean() >= 0.85


def test_failure_returns_the_input(digits_mlp) -> None:
    model, x, y = digits_mlp
    adv = carlini_wagner_l2(model, x[:8], y[:8], LpThreat("l2", 1.0), binary_search_steps=1, max_iterations=2)
    assert torch.equal(adv, x[:8])


@pytest.mark.parametrize("classes", [2, 5])
def test_pgd_with_the_cw_margin_loss(helpers, classes: int) -> None:
    """Exact for a binary model; with 5 classes the margin may chase a class that is not the nearest."""
    model, x = helpers.linear_model(classes), helpers.linear_points()
    y = model(x).argmax(1)
    opt = helpers.minimal_norm(model, x, "linf")
    gen = torch.Generator().manual_seed(0)
    above = pgd(model, x, y, LpThreat("linf", opt * 1.05, **helpers.BOX), loss="cw", steps=100, generator=gen)
    below = pgd(model, x, y, LpThreat("linf", opt * 0.95, **helpers.BOX), loss="cw", steps=100, generator=gen)
    assert helpers.success(model, above, y).float().mean() >= (1.0 if classes == 2 else 0.75)
    assert not helpers.success(model, below, y).any()


def test_adam_step_matches_torch_adam() -> None:
    """C&W's element-wise Adam (in-place moments, bias corrections folded into scalars) takes torch.optim.Adam's
    steps on the same gradients."""
    from bastion.attacks.cw import ADAM_BETAS, ADAM_EPS, _adam

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 1, 3, 3, generator=g)
    grads = [torch.randn(4, 1, 3, 3, generator=g) for _ in range(5)]
    ref = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.01, betas=ADAM_BETAS, eps=ADAM_EPS)
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for t, grad in enumerate(grads, start=1):
        ref.grad = grad.clone()
        opt.step()
        w, m, v = _adam(w, grad, m, v, t, 0.01)
        assert torch.allclose(w, ref.detach(), atol=1e-6)
