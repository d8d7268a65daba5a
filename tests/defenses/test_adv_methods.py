"""Every adversarial-training method beats standard training on robust accuracy (toy problem, seconds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from adv_helpers import EPS, toy, toy_model

from bastion.defenses.training import METHODS, StepContext, robust_accuracy
from bastion.threat import LpThreat

TRAIN, TEST = toy(512, 0), toy(400, 1)
THREAT = LpThreat("linf", EPS)
HYPER = {"pgd-at": {"steps": 5}, "trades": {"steps": 5}, "mart": {"steps": 5}, "awp": {"steps": 5}, "fast-at": {}}


def _train(step, epochs: int = 8, **kw) -> torch.nn.Module:
    model = toy_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        for b, idx in enumerate(torch.randperm(len(TRAIN), generator=g).split(64)):
            step(model, opt, TRAIN.x[idx], TRAIN.y[idx], THREAT, StepContext(seed=epoch * 100 + b), **kw)
    return model.eval()


def _standard(model, opt, x, y, threat, ctx) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.fixture(scope="module")
def standard_robust() -> float:
    clean, robust = robust_accuracy(_train(_standard), TEST.x, TEST.y, THREAT)
    assert clean > 0.95, "the toy problem should be easy without an adversary"
    return robust


@pytest.mark.parametrize("name", METHODS.names())
def test_method_beats_standard_training(name: str, standard_robust: float) -> None:
    model = _train(METHODS.get(name).step, **HYPER[name])
    clean, robust = robust_accuracy(model, TEST.x, TEST.y, THREAT, steps=20)
    assert standard_robust < 0.3
    assert robust > standard_robust + 0.5, f"{name}: robust {robust:.3f} vs standard {standard_robust:.3f}"
    assert clean > 0.9


def test_steps_report_their_cost() -> None:
    model, x, y = toy_model(), TRAIN.x[:32], TRAIN.y[:32]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert METHODS.get("fast-at").step(model, opt, x, y, THREAT).forward == 2 * 32
    assert METHODS.get("pgd-at").step(model, opt, x, y, THREAT, steps=3).forward == 4 * 32


def test_steps_do_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model, x, y = toy_model(), TRAIN.x[:16], TRAIN.y[:16]
    for name in METHODS.names():
        METHODS.get(name).step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, THREAT, **HYPER[name])
    assert torch.equal(before, torch.get_rng_state())
