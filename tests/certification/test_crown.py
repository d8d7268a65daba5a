"""CROWN / CROWN-IBP: soundness, tightness against IBP, exactness on linear networks, errors."""

from __future__ import annotations

import pytest
import torch
from certify_helpers import digits_mlp, pgd
from torch import nn

from bastion.certification import crown, ibp
from bastion.errors import InvalidInputError

EPS = 0.03
N = 12


def _check_contains(model: nn.Module, pts: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(pts.flatten(0, 1)).view(pts.shape[0], pts.shape[1], -1)
    assert (out >= lo - 1e-4).all() and (out <= hi + 1e-4).all()


@pytest.mark.parametrize("intermediate", ["crown", "ibp"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_linf_bounds_contain_random_and_pgd_points(name: str, intermediate: str, trained_mlp: nn.Module,
                                                   trained_cnn: nn.Module, digits: tuple) -> None:
    model = trained_mlp if name == "mlp" else trained_cnn
    x, y = digits[2][:N], digits[3][:N]
    lo, hi = crown.crown_bounds(model, x, EPS, intermediate=intermediate, intersect_ibp=False)
    g = torch.Generator().manual_seed(0)
    u = torch.rand((300, *x.shape), generator=g) * 2 - 1
    _check_contains(model, (x + EPS * torch.where(torch.rand(u.shape, generator=g) < 0.5, u.sign(), u)).clamp(0, 1),
                    lo, hi)
    adv = pgd(model, x, y, EPS, "linf", steps=20, generator=g)
    _check_contains(model, adv[None], lo, hi)
    margins = crown.margin_bounds(model, x, y, EPS, intermediate=intermediate, intersect_ibp=False)
    with torch.no_grad():
        z = model(adv)
    keep = torch.ones_like(z, dtype=torch.bool).scatter(1, y[:, None], False)
    assert ((z.gather(1, y[:, None]) - z)[keep].view(N, -1) >= margins - 1e-4).all()


def test_l2_bounds_contain_random_and_pgd_points(trained_mlp: nn.Module, digits: tuple) -> None:
    x, y, eps = digits[2][:N], digits[3][:N], 0.3
    lo, hi = crown.crown_bounds(trained_mlp, x, eps, norm="l2", intersect_ibp=False)
    g = torch.Generator().manual_seed(1)
    d = torch.randn((300, *x.shape), generator=g)
    d = d / d.flatten(2).norm(dim=2)[..., None, None, None] * eps  # on the sphere
    _check_contains(trained_mlp, x + d, lo, hi)
    adv = pgd(trained_mlp, x, y, eps, "l2", steps=20, generator=g)
    _check_contains(trained_mlp, adv[None], lo, hi)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_full_crown_is_tighter_than_ibp_on_every_output(name: str, trained_mlp: nn.Module, trained_cnn: nn.Module,
                                                       digits: tuple) -> None:
    model = trained_mlp if name == "mlp" else trained_cnn
    x = digits[2][:N]
    lo, hi = ibp.interval_bounds(model, (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1))
    for intersect in (False, True):
        c_lo, c_hi = crown.crown_bounds(model, x, EPS, intersect_ibp=intersect)
        assert (c_lo >= lo - 1e-5).all() and (c_hi <= hi + 1e-5).all()
    assert ((c_hi - c_lo) < 0.5 * (hi - lo)).float().mean() > 0.9  # not just tied: much tighter


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_crown_verifies_at_least_what_ibp_does(name: str, trained_mlp: nn.Module, trained_cnn: nn.Module,
                                               digits: tuple) -> None:
    model = trained_mlp if name == "mlp" else trained_cnn
    x, y = digits[2][:48], digits[3][:48]
    eps = 0.01
    by_ibp = ibp.verified(model, x, y, eps)
    by_crown = crown.verified(model, x, y, eps)
    by_crown_ibp = crown.verified(model, x, y, eps, intermediate="ibp")
    assert (by_crown >= by_ibp).all() and (by_crown_ibp >= by_ibp).all()
    assert by_crown.sum() > by_ibp.sum()
    assert (by_crown >= crown.verified(model, x, y, eps, intersect_ibp=False)).all()


def test_global_rng_and_inputs_untouched(trained_cnn: nn.Module, digits: tuple) -> None:
    x, y = digits[2][:4], digits[3][:4]
    x0, state = x.clone(), torch.random.get_rng_state()
    crown.verified(trained_cnn, x, y, 0.01)
    crown.crown_bounds(trained_cnn, x, 0.01, norm="l2", intermediate="ibp")
    assert torch.equal(torch.random.get_rng_state(), state) and torch.equal(x, x0)


def test_linear_network_is_exact() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)).eval()
    x = torch.rand(7, 6)
    eps = 0.1
    w = model[2].weight @ model[1].weight @ model[0].weight
    b = model[2].weight @ (model[1].weight @ model[0].bias + model[1].bias) + model[2].bias
    with torch.no_grad():
        lo, hi = crown.crown_bounds(model, x, eps, lower=-10, upper=10, intersect_ibp=False)
        center = x @ w.T + b
        torch.testing.assert_close(hi, center + eps * w.abs().sum(1))
        torch.testing.assert_close(lo, center - eps * w.abs().sum(1))
        l2_lo, l2_hi = crown.crown_bounds(model, x, eps, norm="l2", intersect_ibp=False)
        torch.testing.assert_close(l2_hi, center + eps * w.norm(dim=1))
        torch.testing.assert_close(l2_lo, center - eps * w.norm(dim=1))
        i_lo, i_hi = ibp.interval_bounds(model, x - eps, x + eps)
    assert ((i_hi - i_lo) > (hi - lo) + 1e-4).any()  # IBP is loose where CROWN is exact


def test_bounds_are_differentiable_and_crown_ibp_loss_trains(digits: tuple) -> None:
    x, y = digits[0][:64], digits[1][:64]
    model = digits_mlp(seed=1)
    loss = crown.crown_ibp_loss(model, x, y, eps=0.05, beta=0.5, kappa=0.5)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_clear_errors(digits: tuple) -> None:
    x, y = digits[2][:2], digits[3][:2]
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    with pytest.raises(InvalidInputError, match="MaxPool2d"):
        crown.verified(pooled.eval(), x, y, 0.1)
    assert ibp.verified(pooled.eval(), x, y, 0.1).shape == (2,)  # IBP takes max pooling
    with pytest.raises(InvalidInputError, match="Sigmoid"):
        crown.crown_bounds(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid()), x, 0.1)
    with pytest.raises(InvalidInputError, match="norm"):
        crown.crown_bounds(digits_mlp(), x, 0.1, norm="l1")  # type: ignore[arg-type]
