"""The IDS survey's attacks carried into a tabular threat (tabular-zoo, tabular-deepfool, kde-evasion, idsgan): every
returned row valid, immutables kept, points broken; ZOO's query accounting; DeepFool's closed-form boundary point on a
linear model; the KDE term's effect; IDSGAN's seeding and what training buys."""

from __future__ import annotations

import pytest
import torch
from tests.attacks.tabular_flows import flow_threat, flows, linear_model, seeded, trained_mlp
from torch import nn

from bastion.attacks import ATTACKS
from bastion.attacks.constrained import ascent, relax
from bastion.attacks.idsgan import Gan
from bastion.attacks.kde_evasion import density, kde_evasion, median_bandwidth
from bastion.attacks.losses import margin
from bastion.attacks.tabular_deepfool import walk
from bastion.attacks.tabular_zoo import tabular_zoo
from bastion.oracle import CountingModel

PARAMS = {"tabular-zoo": {"steps": 100}, "tabular-deepfool": {}, "kde-evasion": {}, "idsgan": {}}


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    return trained_mlp()




@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(PARAMS))
def test_valid_rows_that_break_points(name: str, norm: str, mlp: nn.Module) -> None:
    """Every returned row passes ``contains``, the immutable port never moves, and more points are misclassified
    than before the attack."""
    x, y = flows(48, seed=1)
    threat = flow_threat(norm, 0.05 if norm == "linf" else 0.1)
    adv = ATTACKS.get(name).fn(mlp, x, y, threat, generator=seeded(), **PARAMS[name])
    bad = {k: int(v.sum()) for k, v in threat.violations(adv, x).items() if v.any()}
    assert threat.contains(adv, x).all(), f"{name}: invalid rows {bad}"
    assert torch.equal(adv[:, 0], x[:, 0]), "the immutable port moved"
    assert int((mlp(adv).argmax(1) != y).sum()) > int((mlp(x).argmax(1) != y).sum()), f"{name} broke no point"


def test_zoo_counts_its_queries_and_keeps_the_budget(mlp: nn.Module) -> None:
    """Through the runner's counter with a hard budget: each point spends 1 query for the clean check plus
    2k + 1 per iteration (k = 4 free features here), never more than the budget; points left unbroken stop only
    when another iteration would not fit."""
    x, y = flows(24, seed=1)
    threat, budget, k = flow_threat("linf", 0.02), 60, 4
    counter = CountingModel(mlp, x.shape[0], max_queries=budget)
    adv = tabular_zoo(counter, x, y, threat, max_queries=budget, generator=seeded())
    spent = counter.counts().forward
    assert bool((spent <= budget).all())
    assert bool(((spent - 1) % (2 * k + 1) == 0).all()), spent
    broken = (mlp(adv).argmax(1) != y) & threat.contains(adv, x)
    assert bool((spent[~broken] > budget - (2 * k + 1)).all()) and bool((~broken).any())
    assert threat.contains(adv, x).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_walk_reaches_the_closed_form_boundary_point(norm: str) -> None:
    """A linear binary model of the scaled free features (the derived mean and the minimum ignored): DeepFool's
    point is x + (1 + overshoot) * |g| / ||w||_2^2 * w (L2) or |g| / ||w||_1 * sign(w) (L-inf) in the scaled space,
    with g the logit gap, when no bound is in the way; the attack returns its repair, a valid row."""
    x, _ = flows(16, seed=4)
    w = torch.tensor([0.0, -1.0, 1.5, 2.0, 0.0, 0.0])
    threat = flow_threat(norm, 10.0)  # a budget that never binds
    lower, scale = threat.lower.float(), threat.scale.float()
    model = linear_model(w.tolist(), -1.5)
    g = ((x - lower) / scale) @ w - 1.5
    wf = w * threat.free.float()
    if norm == "l2":
        step = wf * (g.abs() / wf.square().sum())[:, None]
    else:
        step = wf.sign() * (g.abs() / wf.abs().sum())[:, None]
    expected = threat.complete(x + 1.02 * step * scale)
    keep = (g < 0) & ((expected >= lower) & (expected <= threat.upper.float())).all(1)  # class 0, no bound in the way
    assert int(keep.sum()) >= 3
    x, expected = x[keep], expected[keep]
    y = torch.zeros(len(x), dtype=torch.long)
    out = walk(model, x, y, threat, overshoot=0.02)
    # DeepFool's own 1e-4 (scaled units) past the boundary is the only difference on the free features; the derived
    # mean follows them
    free = threat.free
    torch.testing.assert_close(((out - x) / scale)[:, free], ((expected - x) / scale)[:, free], rtol=0, atol=3e-4)
    torch.testing.assert_close(out, threat.complete(out))
    assert bool((model(out).argmax(1) == 1).all())
    adv = ATTACKS.get("tabular-deepfool").fn(model, x, y, threat)
    assert threat.contains(adv, x).all()


def test_kde_evasion_without_density_is_plain_descent_on_the_margin() -> None:
    """lambda = 0: the attack is projected steepest descent on g alone; on a linear model g falls at every step, so
    its best row is the repair of the last iterate of the same descent written out here."""
    x, _ = flows(12, seed=7)
    model = linear_model([0.0, -1.0, 1.5, 2.0, 0.0, 0.0], -30.0)
    y = torch.zeros(12, dtype=torch.long)
    threat = flow_threat("linf", 0.05)
    adv = kde_evasion(model, x, y, threat, lam=0.0, steps=8)
    step = 0.1 * threat.eps_for(x)
    z = x.clone()
    for _ in range(8):
        z0 = z.detach().requires_grad_(True)
        g = -margin(model(threat.complete(z0)), y)
        (grad,) = torch.autograd.grad(g.sum(), z0)
        z = relax(threat, ascent(z, -grad, step, threat), x).detach()
    torch.testing.assert_close(adv, threat.project(z, x))
    assert not torch.equal(adv, x)


def test_kde_evasion_with_a_large_lambda_moves_towards_benign_rows(mlp: nn.Module) -> None:
    """With a large density weight the result sits where the benign reference rows are denser than without it."""
    x, y = flows(48, seed=1)
    x, y = x[y == 1], y[y == 1]
    ref = flows(200, seed=11)
    benign = ref[0][ref[1] == 0]
    threat = flow_threat("l2", 0.1)
    h = median_bandwidth(x, benign, threat)
    plain = kde_evasion(mlp, x, y, threat, lam=0.0, reference=benign)
    pulled = kde_evasion(mlp, x, y, threat, lam=1000.0, reference=benign)
    before, p0, p1 = (density(t, benign, threat, h) for t in (x, plain, pulled))
    assert float(p1.mean()) > float(p0.mean()) and float(p1.mean()) > float(before.mean())
    assert threat.contains(pulled, x).all()


def test_idsgan_is_seeded_and_training_helps(mlp: nn.Module) -> None:
    """The same generator seed gives the same rows; the trained generator's own flows pass the detector more often
    than the untrained generator's on the same points (both drawn once, same seed)."""
    x, y = flows(48, seed=1)
    keep = mlp(x).argmax(1) == y
    x, y = x[keep], y[keep]
    threat = flow_threat("linf", 0.05)
    first = ATTACKS.get("idsgan").fn(mlp, x, y, threat, epochs=10, generator=seeded(3))
    assert torch.equal(first, ATTACKS.get("idsgan").fn(mlp, x, y, threat, epochs=10, generator=seeded(3)))
    rates = []
    for epochs in (0, 100):
        gan = Gan(mlp, x, y, threat, targeted=False, noise_dim=9, hidden=64, generator=seeded())
        gan.train(epochs=epochs, batch_size=64, lr=1e-3, critic_steps=5, clip=0.01)
        rates.append(float(gan.generate(torch.arange(len(y)))[1].float().mean()))
    assert rates[1] > rates[0], rates
