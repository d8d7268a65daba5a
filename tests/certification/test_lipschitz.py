"""1-Lipschitz networks: the constant really is at most 1, and certificates survive L2 attacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from certify_helpers import fit, pgd
from torch import nn

from bastion.certification import GroupSort, OrthoLinear, lipschitz_certify, lipschitz_constant, lipschitz_mlp
from bastion.certification.lipschitz import bjorck_orthonormalize
from bastion.errors import InvalidInputError


@pytest.fixture(scope="module")
def lip_model(digits: tuple) -> nn.Module:
    x, y, _, _ = digits
    model = lipschitz_mlp((1, 8, 8), 10, width=128, depth=2, generator=torch.Generator().manual_seed(0))
    # Scaled cross-entropy (a temperature) so the 1-Lipschitz logits grow useful margins quickly.
    return fit(model, x, y, steps=150, lr=3e-3, loss_fn=lambda z, t: F.cross_entropy(8.0 * z, t))


@pytest.mark.parametrize("shape", [(30, 64), (64, 30), (10, 10), (1, 50)])
@pytest.mark.parametrize("iters", [1, 3, 20])
def test_bjorck_never_exceeds_spectral_norm_one(shape: tuple[int, int], iters: int) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g, dtype=torch.double) * 5
    q = bjorck_orthonormalize(w, iters=iters)
    assert torch.linalg.matrix_norm(q, ord=2) <= 1 + 1e-9
    if iters == 20 and shape != (1, 50):
        small = min(shape)
        gram = q @ q.T if shape[0] == small else q.T @ q
        assert torch.allclose(gram, torch.eye(small, dtype=torch.double), atol=1e-3)  # converged


def test_groupsort_is_a_permutation_of_each_pair() -> None:
    x = torch.tensor([[3.0, 1.0, -2.0, 5.0]])
    assert GroupSort(2)(x).tolist() == [[3.0, 1.0, 5.0, -2.0]]
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(GroupSort(4)(x).norm(dim=1), x.norm(dim=1))


def test_empirical_lipschitz_constant_at_most_one(lip_model: nn.Module, digits: tuple) -> None:
    g = torch.Generator().manual_seed(3)
    x = digits[2][:200]
    for scale in (1.0, 0.1, 0.001):  # far pairs and near pairs (local slopes)
        x2 = x + scale * torch.randn(x.shape, generator=g)
        with torch.no_grad():
            ratio = (lip_model(x) - lip_model(x2)).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
        assert ratio.max() <= 1 + 1e-4, (scale, ratio.max())
        assert ratio.max() > 0.3  # and the network is not trivially contracting


def _power_iteration(matvec, rmatvec, dim: int, iters: int = 200) -> float:
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    for _ in range(iters):
        v = rmatvec(matvec(v))
        v = v / v.norm()
    return float(matvec(v).norm())


def test_power_iteration_bounds_on_the_layers_and_the_jacobian(lip_model: nn.Module, digits: tuple) -> None:
    layers = [m for m in lip_model.modules() if isinstance(m, OrthoLinear)]
    norms = []
    for layer in layers:
        w = layer.orthonormal_weight().detach().double()
        norms.append(_power_iteration(lambda v, w=w: w @ v, lambda u, w=w: w.T @ u, w.shape[1]))
    assert math.prod(norms) <= 1 + 1e-5
    assert lipschitz_constant(lip_model) == pytest.approx(math.prod(norms), rel=1e-4)
    # Spectral norm of the network's Jacobian at data points (the local Lipschitz constant) <= 1.
    model = lip_model.double()
    try:
        for x in digits[2][:5].double():
            jac = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x).flatten(1)
            top = _power_iteration(lambda v, j=jac: j @ v, lambda u, j=jac: j.T @ u, jac.shape[1])
            assert top <= 1 + 1e-6
    finally:
        lip_model.float()


def test_certified_radius_below_the_smallest_adversarial_found(lip_model: nn.Module, digits: tuple) -> None:
    x, y = digits[2][:100], digits[3][:100]
    cert = lipschitz_certify(lip_model, x, y)
    with torch.no_grad():
        z = lip_model(x)
    own = z.gather(1, y[:, None]).squeeze(1)
    margin = own - z.scatter(1, y[:, None], float("-inf")).amax(1)
    torch.testing.assert_close(cert.radius, margin.clamp_min(0) / (math.sqrt(2) * cert.lipschitz))
    ok = cert.radius > 0
    assert ok.float().mean() > 0.7 and (cert.prediction[ok] == y[ok]).all()
    xs, ys, r = x[ok], y[ok], cert.radius[ok]
    g = torch.Generator().manual_seed(0)
    # Smallest adversarial norm found by PGD, bisecting on the radius (per sample).
    lo, hi = r.clone(), torch.full_like(r, 8.0)
    for _ in range(8):
        mid = (lo + hi) / 2
        adv = pgd(lip_model, xs, ys, mid, "l2", steps=20, generator=g, lower=-10.0, upper=10.0)
        with torch.no_grad():
            broken = lip_model(adv).argmax(1) != ys
        hi, lo = torch.where(broken, mid, hi), torch.where(broken, lo, mid)
    inside = pgd(lip_model, xs, ys, r, "l2", steps=40, generator=g, lower=-10.0, upper=10.0)
    with torch.no_grad():
        assert (lip_model(inside).argmax(1) == ys).all()
    assert (r <= hi).all()
    assert (hi < 8.0).float().mean() > 0.9  # the attack does find adversarials for most points


def test_certify_errors(digits: tuple) -> None:
    x, y = digits[2][:2], digits[3][:2]
    with pytest.raises(InvalidInputError, match="eval"):
        lipschitz_certify(lipschitz_mlp((1, 8, 8), 10, width=8, depth=1), x, y)
    with pytest.raises(InvalidInputError, match="Tanh"):
        lipschitz_constant(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    assert lipschitz_certify(linear, x, y, lipschitz=2.0).lipschitz == 2.0


