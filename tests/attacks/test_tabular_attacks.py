"""The constraint-respecting attacks (CPGD, CAPGD, MoEvA2, CAA) inside a real TabularThreat: closed-form optima on a
linear model, every returned row valid, unconstrained PGD's rows rejected, MoEvA2's search and seeding, CAA versus
CAPGD."""

from __future__ import annotations

import pytest
import torch
from tests.attacks.tabular_flows import LOWER, UPPER, flow_threat, flows, linear_model, seeded, trained_mlp
from torch import Tensor, nn

from bastion.attacks import ATTACKS
from bastion.attacks.caa import caa
from bastion.attacks.capgd import capgd
from bastion.attacks.moeva2 import moeva2, nondominated_rank
from bastion.attacks.pgd import pgd
from bastion.threat import LpThreat

TABULAR = ("cpgd", "capgd", "moeva2", "caa")
SMALL_SEARCH = {"generations": 10, "population": 30, "offspring": 30}  # MoEvA2 budgets for a 2-core test run


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    return trained_mlp()




@pytest.mark.parametrize("name", ["cpgd", "capgd"])
def test_linf_reaches_the_closed_form_constrained_optimum(name: str) -> None:
    """A linear model that rewards fewer packets, more bytes, a longer flow and a larger minimum (and ignores the
    derived mean): inside the L-inf ball (eps = 1/16 of each range) the constrained optimum is, per row, packets - 6
    (6.25 rounded towards the input, at least 1), bytes + 1250 (at most 20000), duration + 62500, and the minimum
    raised by 93 but never above floor(mean) of the new row, mean = bytes / packets. With two classes the loss of
    class 0 rises with the logit gap, so the best valid row is the highest-loss one, adversarial or not. (The bias
    keeps the logits moderate: a saturated softmax has a float32 loss of exactly 0, and nothing to climb.)"""
    x, _ = flows(16, seed=5)
    y = torch.zeros(16, dtype=torch.long)
    threat = flow_threat("linf", 0.0625)
    adv = ATTACKS.get(name).fn(linear_model([3.0, -2.0, 2.0, 1.0, 0.0, 4.0], -4.0), x, y, threat, generator=seeded())
    packets = (x[:, 1] - 6).clamp_min(1)
    byts = (x[:, 2] + 1250).clamp_max(20000)
    mean = byts / packets
    low = torch.minimum(x[:, 5] + 93, mean.floor())
    expected = torch.stack([x[:, 0], packets, byts, (x[:, 3] + 62500).clamp_max(1e6), mean, low], 1)
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-3)
    assert threat.contains(adv, x).all()
    assert bool((low < x[:, 5] + 93).any()), "the inequality never binds: the test would not check the repair"


def test_l2_capgd_spends_the_whole_budget_on_the_one_feature_that_matters() -> None:
    """Only the duration moves the linear model: the L2 optimum puts the whole budget there, duration + eps * range,
    and leaves every other feature as it was."""
    x, _ = flows(8, seed=6)
    threat = flow_threat("l2", 0.05)
    adv = capgd(linear_model([0.0, 0.0, 0.0, 1.0, 0.0, 0.0], -2.0), x, torch.zeros(8, dtype=torch.long), threat,
                generator=seeded())
    expected = x.clone()
    expected[:, 3] += 0.05 * 1e6
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", TABULAR)
def test_every_returned_row_satisfies_every_constraint(name: str, norm: str, mlp: nn.Module) -> None:
    """The acceptance criterion: 100% of the rows a constrained attack returns pass ``contains`` (budget, box,
    immutable port, integer counts, mean = bytes / packets, min <= mean), and the attack does break some points."""
    x, y = flows(24, seed=1)
    threat = flow_threat(norm, 0.05 if norm == "linf" else 0.1)
    params = SMALL_SEARCH if name in ("moeva2", "caa") else {}
    adv = ATTACKS.get(name).fn(mlp, x, y, threat, generator=seeded(), **params)
    bad = {k: int(v.sum()) for k, v in threat.violations(adv, x).items() if v.any()}
    assert threat.contains(adv, x).all(), f"{name}: invalid rows {bad}"
    assert torch.equal(adv[:, 0], x[:, 0]), "the immutable port moved"
    assert int((mlp(adv).argmax(1) != y).sum()) > int((mlp(x).argmax(1) != y).sum()), f"{name} broke no point"


def test_unconstrained_pgd_produces_flows_that_cannot_exist(mlp: nn.Module) -> None:
    """PGD in the same scaled L-inf ball but blind to the constraints: it moves the port, makes packet counts
    fractional and the mean disagree with bytes / packets, and ``contains`` rejects its rows, while CAPGD's rows,
    found under the same budget, are all valid. (So the valid rate means something: it is not 100% by default.)"""
    x, y = flows(24, seed=1)
    threat, eps = flow_threat("linf", 0.05), 0.05
    span = UPPER - LOWER
    scaled_model = _Unscale(mlp)
    u = (x - LOWER) / span
    u_adv = pgd(scaled_model, u, y, LpThreat("linf", eps, lower=0.0, upper=1.0), steps=10, generator=seeded())
    x_pgd = LOWER + u_adv * span
    pgd_valid = threat.contains(x_pgd, x)
    pgd_success = mlp(x_pgd).argmax(1) != y
    why = threat.violations(x_pgd, x)
    assert float(pgd_valid.float().mean()) <= 0.1, f"PGD's rows were valid {float(pgd_valid.float().mean()):.0%}"
    assert why["immutable"].any() and why["integer"].any() and why["[mean] == [bytes] / [packets]"].any()
    assert int((pgd_success & ~pgd_valid).sum()) > 0, "PGD reported no success on an invalid flow"
    assert threat.contains(capgd(mlp, x, y, threat, generator=seeded()), x).all()


class _Unscale(nn.Module):
    """The raw-unit model seen from the [0, 1]-scaled space that an Lp attack works in."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, u: Tensor) -> Tensor:
        return self.model(LOWER + u * (UPPER - LOWER))


def test_moeva2_improves_over_generations_and_is_seeded(mlp: nn.Module) -> None:
    """On points it cannot break (a small budget), MoEvA2's best row after 12 generations has a true-class
    probability no higher than after 1 generation for every point (elitism: the first generation's draws are the
    same) and strictly lower on average; the same seed gives the same rows, another seed others."""
    x, y = flows(10, seed=2)
    threat = flow_threat("linf", 0.01)
    params = {"population": 30, "offspring": 30}
    short = moeva2(mlp, x, y, threat, generations=1, generator=seeded(), **params)
    long = moeva2(mlp, x, y, threat, generations=12, generator=seeded(), **params)
    p_short = mlp(short).softmax(1).gather(1, y[:, None]).squeeze(1)
    p_long = mlp(long).softmax(1).gather(1, y[:, None]).squeeze(1)
    assert bool((p_long <= p_short + 1e-6).all())
    assert float(p_long.mean()) < float(p_short.mean()) - 1e-4
    assert torch.equal(long, moeva2(mlp, x, y, threat, generations=12, generator=seeded(), **params))
    assert not torch.equal(long, moeva2(mlp, x, y, threat, generations=12, generator=seeded(1), **params))
    assert threat.contains(long, x).all()


def test_nondominated_rank_matches_the_definition() -> None:
    """Front 0 is the set of vectors no other vector dominates; front 1 those only front 0 dominates; and so on."""
    scores = torch.tensor([[[1.0, 5.0], [2.0, 2.0], [5.0, 1.0], [3.0, 3.0], [6.0, 6.0], [2.0, 2.0]]])
    assert nondominated_rank(scores, 6).tolist() == [[0, 0, 0, 1, 2, 0]]


def test_caa_is_at_least_as_strong_as_capgd(mlp: nn.Module) -> None:
    """CAA runs CAPGD (2 restarts) first and MoEvA2 on what it left: every point CAPGD breaks stays broken, with a
    valid row."""
    x, y = flows(24, seed=1)
    threat = flow_threat("l2", 0.1)
    alone = capgd(mlp, x, y, threat, restarts=2, generator=seeded())
    both = caa(mlp, x, y, threat, generator=seeded(), **SMALL_SEARCH)
    broken_alone = (mlp(alone).argmax(1) != y) & threat.contains(alone, x)
    broken_both = (mlp(both).argmax(1) != y) & threat.contains(both, x)
    assert bool((broken_both | ~broken_alone).all())
    assert int(broken_both.sum()) >= int(broken_alone.sum()) > 0


def test_caa_counts_each_points_passes_to_that_point(mlp: nn.Module) -> None:
    """Through the runner's pass counter: points CAPGD broke cost at most CAPGD's passes (2 runs of 10 steps, each
    step one forward) plus CAA's one check; the rest also pay MoEvA2's 1 + generations * offspring forwards, booked
    to the right samples although MoEvA2 searches only the subset."""
    from bastion.evaluation.runner import run_attack

    x, y = flows(24, seed=1)
    threat = flow_threat("l2", 0.1)
    alone = capgd(mlp, x, y, threat, restarts=2, generator=seeded())
    by_capgd = (mlp(alone).argmax(1) != y) & threat.contains(alone, x)
    result = run_attack(mlp, x, y, threat, "caa", generator=seeded(), **SMALL_SEARCH)
    attacked = mlp(x).argmax(1) == y
    forward = result.counts.forward
    search = 1 + SMALL_SEARCH["generations"] * SMALL_SEARCH["offspring"]
    assert bool((forward[by_capgd & attacked] <= 2 * 11 + 1).all())
    assert bool((forward[~by_capgd & attacked] >= search).all()) and bool((~by_capgd & attacked).any())


def test_caa_breaks_what_gradients_cannot_reach(mlp: nn.Module) -> None:
    """A model that quantises its input has zero gradient almost everywhere: CAPGD stalls, MoEvA2 (scores only)
    still searches, so CAA breaks strictly more points than CAPGD alone."""
    quantised = _Quantised(mlp)
    x, y = flows(24, seed=1)
    threat = flow_threat("linf", 0.05)
    alone = capgd(quantised, x, y, threat, restarts=2, generator=seeded())
    both = caa(quantised, x, y, threat, generator=seeded(), **SMALL_SEARCH)
    broken_alone = int(((quantised(alone).argmax(1) != y) & threat.contains(alone, x)).sum())
    broken_both = int(((quantised(both).argmax(1) != y) & threat.contains(both, x)).sum())
    assert broken_both > broken_alone, (broken_both, broken_alone)


class _Quantised(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        step = (UPPER - LOWER) / 50
        return self.model((x / step).round() * step)
