"""Interval bound propagation: soundness, elision, errors, the training schedule and step."""

from __future__ import annotations

import pytest
import torch
from certify_helpers import digits_cnn, digits_mlp, pgd
from torch import nn

from bastion.certification import ibp
from bastion.errors import InvalidInputError

EPS = 0.03


def _box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _random_points(x: torch.Tensor, eps: float, count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((count, *x.shape), generator=g) * 2 - 1
    corners = torch.rand((count, *x.shape), generator=g) < 0.5  # half the draws on box corners
    u = torch.where(corners, u.sign(), u)
    return (x[None] + eps * u).clamp(0, 1)


@pytest.mark.parametrize("name", ["mlp", "cnn", "maxpool"])
def test_bounds_contain_random_and_pgd_points(name: str, trained_mlp: nn.Module, trained_cnn: nn.Module,
                                              digits: tuple) -> None:
    if name == "maxpool":
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(64, 10)).eval()
    else:
        model = trained_mlp if name == "mlp" else trained_cnn
    x, y = digits[2][:16], digits[3][:16]
    lo, hi = ibp.interval_bounds(model, *_box(x, EPS))
    pts = _random_points(x, EPS, 200)
    with torch.no_grad():
        out = model(pts.flatten(0, 1)).view(200, 16, -1)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
    adv = pgd(model, x, y, EPS, "linf", steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model(adv)
    assert (z >= lo - 1e-5).all() and (z <= hi + 1e-5).all()
    margins = ibp.margin_bounds(model, x, y, EPS)
    true_margin = z.gather(1, y[:, None]) - z
    keep = torch.ones_like(z, dtype=torch.bool).scatter(1, y[:, None], False)
    assert (true_margin[keep].view(16, -1) >= margins - 1e-5).all()


def test_elision_is_tighter_than_subtracting_intervals(trained_mlp: nn.Module, digits: tuple) -> None:
    x, y = digits[2][:32], digits[3][:32]
    lo, hi = ibp.interval_bounds(trained_mlp, *_box(x, EPS))
    naive = lo.gather(1, y[:, None]) - hi
    keep = torch.ones_like(naive, dtype=torch.bool).scatter(1, y[:, None], False)
    elided = ibp.margin_bounds(trained_mlp, x, y, EPS)
    assert (elided >= naive[keep].view(32, -1) - 1e-5).all()
    assert (elided > naive[keep].view(32, -1) + 1e-4).any()


def test_single_linear_layer_is_exact() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    x = torch.rand(4, 5)
    lo, hi = ibp.interval_bounds(nn.Sequential(layer), x - 0.1, x + 0.1)
    w, b = layer.weight.detach(), layer.bias.detach()
    exact_hi = x @ w.T + b + 0.1 * w.abs().sum(1)
    torch.testing.assert_close(hi, exact_hi)
    torch.testing.assert_close(lo, x @ w.T + b - 0.1 * w.abs().sum(1))


def test_verified_at_zero_eps_is_correctness(trained_mlp: nn.Module, digits: tuple) -> None:
    x, y = digits[2][:64], digits[3][:64]
    with torch.no_grad():
        correct = trained_mlp(x).argmax(1) == y
    assert torch.equal(ibp.verified(trained_mlp, x, y, 0.0), correct)
    assert (ibp.verified(trained_mlp, x, y, 0.05) <= correct).all()


def test_inputs_not_mutated_and_relu_inplace_safe(digits: tuple) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(inplace=True), nn.Linear(16, 10)).eval()
    lo, hi = _box(digits[2][:4], EPS)
    lo0, hi0 = lo.clone(), hi.clone()
    ibp.interval_bounds(model, lo, hi)
    assert torch.equal(lo, lo0) and torch.equal(hi, hi0)


def test_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="Tanh"):
        ibp.interval_bounds(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), torch.zeros(1, 2), torch.ones(1, 2))
    model = digits_cnn()  # BatchNorm in train mode
    with pytest.raises(InvalidInputError, match="eval"):
        ibp.verified(model, torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), 0.1)
    with pytest.raises(InvalidInputError, match="NaN"):
        ibp.verified(digits_mlp().eval(), torch.full((1, 1, 8, 8), float("nan")), torch.zeros(1, dtype=torch.long), 0.1)


def test_schedule_follows_the_paper() -> None:
    s = ibp.IBPSchedule(eps=0.4)
    assert (s.warmup_steps, s.ramp_steps, s.kappa_start, s.kappa_end) == (2_000, 10_000, 1.0, 0.5)
    assert s.eps_at(0) == 0.0 and s.kappa_at(1_999) == 1.0
    assert s.eps_at(7_000) == pytest.approx(0.2) and s.kappa_at(7_000) == pytest.approx(0.75)
    assert s.eps_at(12_000) == pytest.approx(0.4) and s.kappa_at(50_000) == pytest.approx(0.5)


def test_ibp_training_raises_verified_accuracy(digits: tuple) -> None:
    x, y, xt, yt = digits
    model = digits_mlp(seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = ibp.IBPSchedule(eps=0.1, warmup_steps=20, ramp_steps=80)
    g = torch.Generator().manual_seed(0)
    before = None
    for step in range(200):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        result = ibp.ibp_train_step(model, opt, x[idx], y[idx], step=step, schedule=schedule)
        assert torch.isfinite(torch.tensor(result.loss))
        if step == 25:
            before = ibp.verified(model.eval(), xt, yt, 0.1).float().mean()
            model.train()
    assert result.kappa == 0.5 and result.eps == pytest.approx(0.1)
    after = ibp.verified(model.eval(), xt, yt, 0.1).float().mean()
    assert after > max(float(before), 0.3)
