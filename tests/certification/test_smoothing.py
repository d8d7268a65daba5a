"""Randomized smoothing against the closed form of a linear classifier, and against attacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from certify_helpers import digits_mlp, pgd
from scipy.stats import beta, norm
from torch import Tensor, nn

from bastion.certification import PRESETS, gaussian_augmentation_step, smoothing
from bastion.errors import InvalidInputError

SIGMA, N, ALPHA = 0.5, 10_000, 0.001


class LinearBinary(nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as logits (0, w.x + b)."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


def _linear_setup(distances: list[float]) -> tuple[LinearBinary, Tensor, Tensor]:
    """Points at signed L2 distance ``distances`` from the decision boundary of a fixed linear model."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, generator=g, dtype=torch.double)
    b = 0.2
    on_boundary = torch.randn(10, generator=g, dtype=torch.double)
    on_boundary -= (on_boundary @ w + b) / (w @ w) * w
    t = torch.tensor(distances, dtype=torch.double)
    x = on_boundary + t[:, None] * w / w.norm()
    return LinearBinary(w, b).eval(), x, t


def _cp_radius(successes: float) -> float:
    p = beta.ppf(ALPHA, successes, N - successes + 1)
    return SIGMA * norm.ppf(p) if p > 0.5 else 0.0


def test_certify_matches_the_closed_form_of_a_linear_classifier() -> None:
    distances = [-1.5, -0.8, -0.3, 0.0, 0.003, 0.3, 0.8, 1.5]
    model, x, _ = _linear_setup(distances)
    cert = smoothing.certify(model, x, sigma=SIGMA, n=N, alpha=ALPHA, batch_size=4096,
                             generator=torch.Generator().manual_seed(1))
    for i, d in enumerate(distances):
        p_a = norm.cdf(abs(d) / SIGMA)  # exact: P(w.(x + delta) + b has the sign of w.x + b)
        true_radius = abs(d)  # distance to the boundary: the exact minimal adversarial perturbation
        if abs(d) < 0.01:
            assert cert.prediction[i] == -1 and cert.radius[i] == 0
            continue
        assert cert.prediction[i] == int(d > 0)
        assert cert.radius[i] <= true_radius
        sd = math.sqrt(N * p_a * (1 - p_a))
        low, high = _cp_radius(N * p_a - 4.5 * sd), _cp_radius(min(N * p_a + 4.5 * sd, N))
        assert low <= cert.radius[i] <= high, (d, float(cert.radius[i]), low, high)
        top = int(cert.counts[i].max())
        assert cert.p_lower[i] == pytest.approx(beta.ppf(ALPHA, top, N - top + 1))
        # close to the bound at the expected count
        assert abs(float(cert.radius[i]) - _cp_radius(N * p_a)) < 0.1 * true_radius
    assert (cert.counts.sum(1) == N).all()


def test_predict_abstains_at_the_boundary_only() -> None:
    model, x, _ = _linear_setup([-0.8, -0.3, 0.0, 0.3, 0.8])
    g = torch.Generator().manual_seed(2)
    pred = smoothing.predict(model, x, sigma=SIGMA, n=2_000, alpha=ALPHA, generator=g)
    assert pred.prediction.tolist() == [0, 0, -1, 1, 1]
    assert pred.p_value[2] > ALPHA and (pred.p_value[[0, 1, 3, 4]] <= ALPHA).all()


def test_seeded_reproducible_and_global_rng_untouched() -> None:
    model, x, _ = _linear_setup([-0.3, 0.1, 0.5])
    x0 = x.clone()
    state = torch.random.get_rng_state()
    kwargs = dict(sigma=SIGMA, **PRESETS["quick"], batch_size=500)
    a = smoothing.certify(model, x, generator=torch.Generator().manual_seed(5), **kwargs)
    b = smoothing.certify(model, x, generator=torch.Generator().manual_seed(5), **kwargs)
    c = smoothing.certify(model, x, generator=torch.Generator().manual_seed(6), **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(x, x0)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.counts, c.counts)


def test_clear_errors() -> None:
    model, x, _ = _linear_setup([0.5])
    with pytest.raises(InvalidInputError, match="eval"):
        smoothing.certify(model.train(), x, sigma=0.5, n=10)
    with pytest.raises(InvalidInputError, match="sigma"):
        smoothing.predict(model.eval(), x, sigma=0.0, n=10)
    with pytest.raises(InvalidInputError, match="NaN"):
        smoothing.predict(model, x * float("nan"), sigma=0.5, n=10)


class SoftSmoothed(nn.Module):
    """A differentiable stand-in for the smoothed classifier: log of the mean softmax over fixed noise
    draws (Salman et al. 2019's SmoothAdv objective), for attacking the smoothed classifier with PGD."""

    def __init__(self, model: nn.Module, sigma: float, noise: Tensor) -> None:
        super().__init__()
        self.model, self.sigma, self.noise = model, sigma, noise

    def forward(self, x: Tensor) -> Tensor:
        k = self.noise.shape[0]
        noisy = (x[None] + self.sigma * self.noise[:, None]).flatten(0, 1)
        probs = F.softmax(self.model(noisy), dim=1).view(k, x.shape[0], -1).mean(0)
        return probs.clamp_min(1e-12).log()


def test_no_adversarial_inside_the_certified_radius(digits: tuple) -> None:
    x_train, y_train, x_test, y_test = digits
    sigma = 0.25
    model = digits_mlp(seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, x_train.shape[0], (128,), generator=g)
        gaussian_augmentation_step(model, opt, x_train[idx], y_train[idx], sigma=sigma, generator=g)
    model.eval()
    x, y = x_test[:24], y_test[:24]
    cert = smoothing.certify(model, x, sigma=sigma, **PRESETS["quick"], batch_size=8192, generator=g)
    ok = (cert.prediction == y) & (cert.radius > 0)
    assert ok.sum() >= 12  # a noise-trained MLP certifies most digits
    xs, ys, radius = x[ok], y[ok], cert.radius[ok].float()
    surrogate = SoftSmoothed(model, sigma, torch.randn((32, *x.shape[1:]), generator=g))
    inside = pgd(surrogate, xs, ys, radius * 0.999, "l2", steps=30, generator=g)
    assert ((inside - xs).flatten(1).norm(dim=1) <= radius + 1e-4).all()
    after = smoothing.predict(model, inside, sigma=sigma, n=1_000, generator=g).prediction
    assert ((after == ys) | (after == -1)).all()  # never confidently another class
    outside = pgd(surrogate, xs, ys, radius * 2, "l2", steps=30, generator=g)
    far = smoothing.predict(model, outside, sigma=sigma, n=1_000, generator=g).prediction
    assert ((far != ys) & (far != -1)).sum() >= len(ys) // 2  # the attack breaks most at twice the radius
