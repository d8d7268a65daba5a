"""The contract every registered attack must keep. New attacks are tested here automatically."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.attacks.tabular_flows import flow_threat, flows, random_mlp
from torch import nn

from bastion.attacks import ATTACKS
from bastion.threat import LpThreat

EPS = {"linf": 0.1, "l2": 0.8, "l1": 4.0}
# Smaller budgets for the contract only (it checks behaviour, not strength).
CONTRACT_PARAMS: dict[str, dict[str, Any]] = {
    "square": {"max_queries": 300}, "nes": {"max_queries": 500}, "spsa": {"steps": 10}, "zoo": {"steps": 20},
    "hopskipjump": {"max_queries": 1000}, "boundary": {"max_queries": 500}, "cw": {"max_iterations": 50},
    "moeva2": {"generations": 5, "population": 20, "offspring": 20},
    "caa": {"generations": 5, "population": 20, "offspring": 20},
    "tabular-zoo": {"steps": 30}, "idsgan": {"epochs": 20}, "kde-evasion": {"steps": 20},
}

# Attacks are routed by the threat kinds they accept: Lp attacks get the image-like Lp cases below, attacks for
# tabular threats only get a small flow table with constraints (tabular_case).
CASES = [(name, norm) for name in ATTACKS if "lp" in ATTACKS.get(name).threats for norm in ATTACKS.get(name).norms]
TABULAR_CASES = [(name, norm) for name in ATTACKS if "lp" not in ATTACKS.get(name).threats
                 and "tabular" in ATTACKS.get(name).threats for norm in ATTACKS.get(name).norms]
TABULAR_EPS = {"linf": 0.1, "l2": 0.2}
# the genetic attacks need a few more generations than the contract's 5 to be clear of chance when targeted
TABULAR_TARGETED_PARAMS = {"moeva2": {"generations": 15, "population": 20, "offspring": 20},
                           "tabular-zoo": {"steps": 200},
                           # measured on these 12 points: 100 epochs reach 5 / 4 targets (linf / l2) where the
                           # untargeted run lands on 4 / 5; 200 epochs reach 5 / 6 against 4 / 4
                           "idsgan": {"epochs": 200},
                           "caa": {"generations": 15, "population": 20, "offspring": 20}}


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return model.eval()


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)


def _call(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: LpThreat, seed: int) -> torch.Tensor:
    spec = ATTACKS.get(name)
    return spec.fn(model, x, y, threat, generator=torch.Generator().manual_seed(seed), **CONTRACT_PARAMS.get(name, {}))


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_attack_contract(name: str, norm: str) -> None:
    model = _model()
    params_before = [p.detach().clone() for p in model.parameters()]
    x, y = _points()
    x_copy, y_copy = x.clone(), y.clone()
    eps = torch.linspace(0.5, 1.5, len(y)) * EPS[norm]  # per-sample eps
    threat = LpThreat(norm, eps)
    rng_before = torch.random.get_rng_state()

    adv = _call(name, model, x, y, threat, seed=0)

    assert torch.equal(torch.random.get_rng_state(), rng_before), "attack touched the global RNG"
    assert isinstance(adv, torch.Tensor) and adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.device == x.device and not adv.requires_grad
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy), "attack mutated its inputs"
    assert not model.training, "attack left the model in train mode"
    assert all(p.grad is None for p in model.parameters()), "attack accumulated parameter gradients"
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters(), strict=True))
    assert torch.isfinite(adv).all()
    assert adv.min() >= threat.lower - 1e-6 and adv.max() <= threat.upper + 1e-6
    if ATTACKS.get(name).goal == "budget":
        assert threat.contains(adv, x).all(), "budget attack left the threat model"
    again = _call(name, model, x, y, threat, seed=0)
    assert torch.equal(adv, again), "same seed gave a different result"


# The targeted check needs a few more steps from SPSA than the contract's 10 to be clear of chance.
TARGETED_PARAMS = {**CONTRACT_PARAMS, "spsa": {"steps": 40}}


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_targeted_mode_goes_for_the_target(name: str, norm: str) -> None:
    """With ``targeted=True`` every attack steers towards the given class: through the runner it reaches more of
    the targets than its untargeted run happens to land on, and a success always means the target class (minimum-norm
    attacks also count a success only within eps)."""
    from bastion.evaluation.runner import choose_targets, run_attack

    model, (x, _) = _model(), _points()
    with torch.no_grad():
        y = model(x).argmax(1)  # every point is correctly classified, so every point is attacked
    targets = choose_targets(model, x, y, "random", 10, torch.Generator().manual_seed(0))
    threat = LpThreat(norm, 4 * EPS[norm])
    params = TARGETED_PARAMS.get(name, {})
    hit = run_attack(model, x, y, threat, name, targets=targets, generator=torch.Generator().manual_seed(0), **params)
    free = run_attack(model, x, y, threat, name, generator=torch.Generator().manual_seed(0), **params)
    assert hit.targeted and bool((hit.adv_pred[hit.success] == targets[hit.success]).all())
    assert int(hit.success.sum()) > int((free.adv_pred == targets).sum()), (
        f"{name} {norm}: targeted mode reached {int(hit.success.sum())} targets, the untargeted run landed on "
        f"{int((free.adv_pred == targets).sum())}")


@pytest.mark.parametrize(("name", "norm"), TABULAR_CASES)
def test_tabular_attack_contract(name: str, norm: str) -> None:
    """The contract inside a tabular threat: a flow table with an immutable port, integer counts, a derived mean and
    an inequality. Every returned row satisfies every constraint (budget attacks), the port never moves, and the
    rest of the contract holds as for Lp attacks."""
    model = random_mlp(5)
    params_before = [p.detach().clone() for p in model.parameters()]
    x, y = flows(12, seed=3)
    x_copy, y_copy = x.clone(), y.clone()
    threat = flow_threat(norm, torch.linspace(0.5, 1.5, len(y)) * TABULAR_EPS[norm])  # per-row eps
    threat.validate(x)
    rng_before = torch.random.get_rng_state()

    adv = _call(name, model, x, y, threat, seed=0)

    assert torch.equal(torch.random.get_rng_state(), rng_before), "attack touched the global RNG"
    assert isinstance(adv, torch.Tensor) and adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.device == x.device and not adv.requires_grad
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy), "attack mutated its inputs"
    assert not model.training, "attack left the model in train mode"
    assert all(p.grad is None for p in model.parameters()), "attack accumulated parameter gradients"
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters(), strict=True))
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[:, 0], x[:, 0]), "an immutable feature moved"
    if ATTACKS.get(name).goal == "budget":
        bad = {k: int(v.sum()) for k, v in threat.violations(adv, x).items() if v.any()}
        assert threat.contains(adv, x).all(), f"budget attack left the threat: {bad}"
    again = _call(name, model, x, y, threat, seed=0)
    assert torch.equal(adv, again), "same seed gave a different result"


@pytest.mark.parametrize(("name", "norm"), TABULAR_CASES)
def test_tabular_targeted_mode_goes_for_the_target(name: str, norm: str) -> None:
    """Targeted mode inside a tabular threat, through the runner: more targets reached than the untargeted run
    happens to land on, and every success is the target class."""
    from bastion.evaluation.runner import choose_targets, run_attack

    model, (x, _) = random_mlp(5), flows(12, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)
    targets = choose_targets(model, x, y, "random", 5, torch.Generator().manual_seed(0))
    threat = flow_threat(norm, TABULAR_EPS[norm])
    params = TABULAR_TARGETED_PARAMS.get(name, {})
    hit = run_attack(model, x, y, threat, name, targets=targets, generator=torch.Generator().manual_seed(0), **params)
    free = run_attack(model, x, y, threat, name, generator=torch.Generator().manual_seed(0), **params)
    assert hit.targeted and bool((hit.adv_pred[hit.success] == targets[hit.success]).all())
    assert int(hit.success.sum()) > int((free.adv_pred == targets).sum()), (
        f"{name} {norm}: targeted mode reached {int(hit.success.sum())} targets, the untargeted run landed on "
        f"{int((free.adv_pred == targets).sum())}")


def test_registry_metadata_is_complete() -> None:
    assert {"fgsm", "pgd"} <= set(ATTACKS)
    for name in ATTACKS:
        spec = ATTACKS.get(name)
        assert spec.paper and spec.norms and spec.goal in ("budget", "minimal")
        assert set(spec.norms) <= {"linf", "l2", "l1"}


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_per_feature_bounds_hold(name: str, norm: str) -> None:
    """Per-feature box bounds (a standardized tabular data set has its own range per column): every attack's output
    stays inside each feature's own range, features whose range is a single value never move, and budget attacks
    stay in the threat model."""
    model, (x, y) = _model(), _points()
    g = torch.Generator().manual_seed(3)
    lower = -torch.rand(1, 8, 8, generator=g) * 2  # each feature its own range around [lower, upper]
    upper = torch.rand(1, 8, 8, generator=g) * 2 + 0.5
    lower[0, 0, :4] = upper[0, 0, :4] = 0.25  # four constant features: they cannot change
    x = (lower + (upper - lower) * x).clamp(lower, upper)
    threat = LpThreat(norm, EPS[norm] * 2, lower=lower, upper=upper)
    adv = _call(name, model, x, y, threat, seed=0)
    assert (adv >= lower - 1e-5).all() and (adv <= upper + 1e-5).all(), "left a feature's own range"
    assert torch.equal(adv[:, 0, 0, :4], x[:, 0, 0, :4]), "a constant feature moved"
    if ATTACKS.get(name).goal == "budget":
        assert threat.contains(adv, x).all(), "budget attack left the threat model"


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="not run: needs a CUDA GPU")),
])
def test_every_attack_runs_on_the_device(device: str) -> None:
    """The contract on a GPU: inputs, model, per-feature bounds and the generator on the device; outputs stay there,
    inside the box (and the ball for budget attacks), and the same seed repeats them. (The CPU runs above.)"""
    model, (x, y) = _model().to(device), _points()
    x, y = x.to(device), y.to(device)
    lower, upper = torch.zeros(1, 8, 8, device=device), torch.ones(1, 8, 8, device=device)
    for name, norm in CASES:
        threat = LpThreat(norm, torch.linspace(0.5, 1.5, len(y), device=device) * EPS[norm], lower=lower, upper=upper)
        spec = ATTACKS.get(name)
        runs = [spec.fn(model, x, y, threat, generator=torch.Generator(device=device).manual_seed(0),
                        **CONTRACT_PARAMS.get(name, {})) for _ in range(2)]
        assert runs[0].device == x.device and torch.isfinite(runs[0]).all(), name
        assert (runs[0] >= 0).all() and (runs[0] <= 1).all(), name
        if spec.goal == "budget":
            assert threat.contains(runs[0], x).all(), name
        assert torch.equal(runs[0], runs[1]), f"{name}: same seed, different result on {device}"
    model, (x, y) = random_mlp(5).to(device), flows(12, seed=3)
    x, y = x.to(device), y.to(device)
    for name, norm in TABULAR_CASES:
        threat = flow_threat(norm, TABULAR_EPS[norm])
        spec = ATTACKS.get(name)
        runs = [spec.fn(model, x, y, threat, generator=torch.Generator(device=device).manual_seed(0),
                        **CONTRACT_PARAMS.get(name, {})) for _ in range(2)]
        assert runs[0].device == x.device and threat.contains(runs[0], x).all(), name
        assert torch.equal(runs[0], runs[1]), f"{name}: same seed, different result on {device}"
