"""The contract every registered attack must keep. New attacks are tested here automatically."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from bastion.attacks import ATTACKS
from bastion.threat import LpThreat

EPS = {"linf": 0.1, "l2": 0.8, "l1": 4.0}
# Smaller budgets for the contract only (it checks behaviour, not strength).
CONTRACT_PARAMS: dict[str, dict[str, Any]] = {
    "square": {"max_queries": 300}, "nes": {"max_queries": 500}, "spsa": {"steps": 10}, "zoo": {"steps": 20},
    "hopskipjump": {"max_queries": 1000}, "boundary": {"max_queries": 500}, "cw": {"max_iterations": 50},
}

CASES = [(name, norm) for name in ATTACKS for norm in ATTACKS.get(name).norms]


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


def test_registry_metadata_is_complete() -> None:
    assert {"fgsm", "pgd"} <= set(ATTACKS)
    for name in ATTACKS:
        spec = ATTACKS.get(name)
        assert spec.paper and spec.norms and spec.goal in ("budget", "minimal")
        assert set(spec.norms) <= {"linf", "l2", "l1"}
