"""APGD and APGD-T: closed form on linear models, a digits MLP, per-sample eps, early stopping."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.apgd import apgd, apgd_targeted, checkpoints, project_l1_box
from bastion.attacks.pgd import pgd
from bastion.oracle import CountingModel
from bastion.threat import LpThreat

ATTACKS = {"apgd": apgd, "apgd-t": apgd_targeted, "apgd-dlr": lambda *a, **k: apgd(*a, loss="dlr", **k)}


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_checkpoints_follow_the_paper() -> None:
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_binary_linear_succeeds_exactly_above_the_closed_form(helpers, name: str, norm: str) -> None:
    model, x = helpers.linear_model(2), helpers.linear_points()
    y = model(x).argmax(1)
    opt = helpers.minimal_norm(model, x, norm)
    above = ATTACKS[name](model, x, y, LpThreat(norm, opt * 1.05, **helpers.BOX), generator=_gen())
    below = ATTACKS[name](model, x, y, LpThreat(norm, opt * 0.95, **helpers.BOX), generator=_gen())
    assert helpers.success(model, above, y).all()
    assert not helpers.success(model, below, y).any()
    assert LpThreat(norm, opt * 1.05, **helpers.BOX).contains(above, x).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_dlr_finds_the_nearest_class_of_a_multiclass_linear_model(helpers, norm: str) -> None:
    model, x = helpers.linear_model(5), helpers.linear_points()
    y = model(x).argmax(1)
    opt = helpers.minimal_norm(model, x, norm)
    above = apgd_targeted(model, x, y, LpThreat(norm, opt * 1.05, **helpers.BOX), generator=_gen())
    below = apgd_targeted(model, x, y, LpThreat(norm, opt * 0.95, **helpers.BOX), generator=_gen())
    assert helpers.success(model, above, y).all()
    assert not helpers.success(model, below, y).any()


def test_at_least_as_strong_as_pgd_on_digits(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    threat = LpThreat("linf", 0.2)
    base = helpers.success(model, pgd(model, x, y, threat, steps=40, generator=_gen()), y).float().mean()
    for fn in (apgd, apgd_targeted):
        adv = fn(model, x, y, threat, generator=_gen())
        assert threat.contains(adv, x).all()
        assert helpers.success(model, adv, y).float().mean() >= base


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("l1", 4.0)])
def test_other_norms_break_digits(digits_mlp, helpers, norm: str, eps: float) -> None:
    model, x, y = digits_mlp
    threat = LpThreat(norm, eps)
    adv = apgd(model, x, y, threat, generator=_gen())
    assert threat.contains(adv, x).all()
    assert helpers.success(model, adv, y).float().mean() >= 0.9


def test_targeted_with_given_targets(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    targets = (y + 1) % 10
    for kwargs in ({"loss": "ce"}, {"loss": "dlr"}):
        adv = apgd(model, x, targets, LpThreat("linf", 0.3), targeted=True, generator=_gen(), **kwargs)
        assert helpers.success(model, adv, targets, targeted=True).float().mean() >= 0.9
    adv = apgd_targeted(model, x, targets, LpThreat("linf", 0.3), targeted=True, generator=_gen())
    assert helpers.success(model, adv, targets, targeted=True).float().mean() >= 0.9


def test_per_sample_eps_and_zero_eps(digits_mlp) -> None:
    model, x, y = digits_mlp
    eps = torch.linspace(0, 0.3, len(y))
    threat = LpThreat("linf", eps)
    adv = apgd(model, x, y, threat, generator=_gen())
    assert threat.contains(adv, x).all()
    assert torch.equal(adv[0], x[0])


def test_broken_points_stop_and_restarts_spend_only_on_unbroken(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    counting = CountingModel(model, len(y))
    adv = apgd(counting, x, y, LpThreat("linf", 0.08), n_iter=20, restarts=3, generator=_gen())
    broken = helpers.success(model, adv, y)
    backward = counting.counts().backward
    assert broken.any() and (~broken).any()
    assert backward[~broken].eq(3 * 21).all()  # every restart ran in full
    assert backward[broken].lt(3 * 21).all()


def test_l1_box_projection_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    delta, x = torch.randn(4, 30, generator=g), torch.rand(4, 30, generator=g)
    eps = torch.tensor([0.5, 1.0, 3.0, 100.0])
    p = project_l1_box(delta, x, eps, 0.0, 1.0)
    assert (p.abs().sum(1) <= eps * (1 + 1e-5)).all()
    assert ((x + p) >= -1e-6).all() and ((x + p) <= 1 + 1e-6).all()
    assert torch.allclose(p[3], (x[3] + delta[3]).clamp(0, 1) - x[3], atol=1e-6)  # ball inactive: box clip
    # Optimality: no random feasible point is closer to delta.
    for _ in range(20):
        q = project_l1_box(p + 0.1 * torch.randn(4, 30, generator=g), x, eps, 0.0, 1.0)
        assert ((q - delta).norm(dim=1) >= (p - delta).norm(dim=1) - 1e-5).all()


def test_inputs_untouched_and_deterministic(digits_mlp) -> None:
    model, x, y = digits_mlp
    x0 = x.clone()
    a = apgd_targeted(model, x, y, LpThreat("l1", 2.0), n_iter=10, generator=_gen())
    b = apgd_targeted(model, x, y, LpThreat("l1", 2.0), n_iter=10, generator=_gen())
    assert torch.equal(x, x0) and torch.equal(a, b)


def test_select_rows_is_exact() -> None:
    """The lerp-based row select returns the chosen rows bit for bit (weights 0 and 1 on finite values)."""
    from bastion.attacks.steps import select_rows

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, 5, 5, generator=g) * 1e3, torch.rand(7, 3, 5, 5, generator=g) * 1e-3
    mask = torch.tensor([True, False, True, True, False, False, True])
    assert torch.equal(select_rows(mask, a, b), torch.where(mask.view(-1, 1, 1, 1), a, b))


def test_l2_ascent_is_the_l2_step() -> None:
    """The fused L2 step lands where ``x + lp_step(grad, length, "l2")`` does, zero gradients included."""
    from bastion.attacks.steps import l2_ascent, lp_step

    g = torch.Generator().manual_seed(0)
    x, grad = torch.rand(5, 1, 6, 6, generator=g), torch.randn(5, 1, 6, 6, generator=g)
    grad[2] = 0.0
    length = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0])
    got = l2_ascent(x, grad, length)
    assert torch.allclose(got, x + lp_step(grad, length, "l2"), atol=1e-6) and torch.equal(got[2], x[2])
    assert torch.allclose((got - x).flatten(1).norm(dim=1)[[0, 1, 3]], length[[0, 1, 3]], rtol=1e-5)


def test_in_place_l2_projection_and_step_match_the_plain_ones() -> None:
    """``project_radius(overwrite=True)`` (working in the iterate's memory), a pre-shaped radius, and
    ``l2_ascent(out=grad)`` give the same points bit for bit as the plain calls, mask included."""
    from bastion.attacks.steps import l2_ascent

    g = torch.Generator().manual_seed(0)
    x, p = torch.rand(6, 1, 5, 5, generator=g), torch.rand(6, 1, 5, 5, generator=g)
    eps = torch.tensor([0.1, 0.5, 2.0, 0.0, 1.0, 10.0])
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 1:] = True
    for threat in (LpThreat("l2", 1.0), LpThreat("l2", 1.0, mask=mask)):
        plain = threat.project_radius(p, x, eps)
        assert torch.equal(threat.project_radius(p.clone(), x, eps, overwrite=True), plain)
        assert torch.equal(threat.project_radius(p.clone(), x, eps.view(-1, 1, 1, 1), overwrite=True), plain)
    grad = torch.randn(6, 1, 5, 5, generator=g)
    expected = l2_ascent(x, grad, eps)
    assert torch.equal(l2_ascent(x, grad, eps, out=grad), expected)


class _SumModel(torch.nn.Module):
    """Logits (s, -s) with s the sum of the input: autograd's input gradient is a broadcast (stride 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(dim=tuple(range(1, x.dim())))
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("name", ["pgd", "apgd"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_broadcast_input_gradient_is_not_written_in_place(name: str, norm: str) -> None:
    """PGD and APGD write their step over the gradient buffer; a broadcast gradient must be copied first."""
    from bastion.attacks.base import get_attack

    x = torch.full((3, 1, 4, 4), 0.2)
    y = torch.zeros(3, dtype=torch.long)  # class 0 while s > -s, i.e. while the sum is positive
    threat = LpThreat(norm, {"linf": 0.3, "l2": 1.0}[norm])
    adv = get_attack(name).fn(_SumModel(), x, y, threat, generator=torch.Generator().manual_seed(0))
    assert bool(threat.contains(adv, x).all())
    assert torch.equal(x, torch.full((3, 1, 4, 4), 0.2))
