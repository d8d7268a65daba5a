"""Every adversarial-training method beats standard training on robust accuracy (toy problem, seconds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from adv_helpers import EPS, toy, toy_model

from bastion.defenses.training import METHODS, StepContext, robust_accuracy
from bastion.defenses.training.atta import PerturbationMemory
from bastion.defenses.training.grad_align import grad_align_penalty
from bastion.threat import LpThreat
from bastion.zoo.architectures import build_model
from bastion.zoo.train import init_model

TRAIN, TEST = toy(512, 0), toy(400, 1)
THREAT = LpThreat("linf", EPS)
HYPER = {"pgd-at": {"steps": 5}, "trades": {"steps": 5}, "mart": {"steps": 5}, "awp": {"steps": 5}, "fast-at": {}}


def _train(step, epochs: int = 8, memory: PerturbationMemory | None = None, **kw) -> torch.nn.Module:
    model = toy_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        for b, idx in enumerate(torch.randperm(len(TRAIN), generator=g).split(64)):
            ctx = StepContext(seed=epoch * 100 + b, index=idx, memory=memory)
            step(model, opt, TRAIN.x[idx], TRAIN.y[idx], THREAT, ctx, **kw)
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


def test_fast_at_with_grad_align_beats_standard_training(standard_robust: float) -> None:
    model = _train(METHODS.get("fast-at").step, guard="grad-align", grad_align=0.5)
    clean, robust = robust_accuracy(model, TEST.x, TEST.y, THREAT, steps=20)
    assert robust > standard_robust + 0.5 and clean > 0.9, f"robust {robust:.3f} vs standard {standard_robust:.3f}"


def test_grad_align_penalty_vanishes_exactly_for_a_linear_model() -> None:
    # Two-class linear model: grad_x CE = (p_1 - [y = 1]) (w_1 - w_0) keeps its direction everywhere, so cos = 1.
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(TRAIN.x[0].numel(), 2))
    x, y = TRAIN.x[:64], TRAIN.y[:64] % 2
    assert grad_align_penalty(linear, x, y, THREAT, StepContext(seed=1)).abs().max() < 1e-5


def test_grad_align_penalty_is_positive_and_trains_the_weights_of_a_relu_net() -> None:
    model = init_model(lambda: build_model("mlp", TRAIN.x.shape[1:], 2, width=32, depth=2), 0)
    penalty = grad_align_penalty(model, TRAIN.x[:64], TRAIN.y[:64], LpThreat("linf", 4 * EPS), StepContext(seed=1))
    assert penalty.mean() > 1e-4 and (penalty >= -1e-6).all() and (penalty <= 2 + 1e-6).all()
    penalty.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_steps_report_their_cost() -> None:
    model, x, y = toy_model(), TRAIN.x[:32], TRAIN.y[:32]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert METHODS.get("fast-at").step(model, opt, x, y, THREAT).forward == 2 * 32
    aligned = METHODS.get("fast-at").step(model, opt, x, y, THREAT, guard="grad-align")
    assert (aligned.forward, aligned.backward) == (4 * 32, 8 * 32)
    assert METHODS.get("pgd-at").step(model, opt, x, y, THREAT, steps=3).forward == 4 * 32


def test_steps_do_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model, x, y = toy_model(), TRAIN.x[:16], TRAIN.y[:16]
    for name in METHODS.names():
        METHODS.get(name).step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, THREAT, **HYPER[name])
    assert torch.equal(before, torch.get_rng_state())


def test_fast_at_with_atta_prior_beats_standard_training(standard_robust: float) -> None:
    memory = PerturbationMemory(len(TRAIN))
    model = _train(METHODS.get("fast-at").step, memory=memory, guard="none", init="prior", alpha_factor=1.0)
    clean, robust = robust_accuracy(model, TEST.x, TEST.y, THREAT, steps=20)
    assert robust > standard_robust + 0.5 and clean > 0.9, f"robust {robust:.3f} vs standard {standard_robust:.3f}"
    assert memory.seen is not None and bool(memory.seen.all())


def test_atta_accumulates_one_step_per_visit_to_the_corner_of_the_ball() -> None:
    # Two-class linear model, frozen (lr 0): the input gradient's sign is the same everywhere, so the stored
    # perturbation moves alpha per visit along it until it reaches eps * sign (where the box allows).
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(TRAIN.x[0].numel(), 2))
    opt = torch.optim.SGD(linear.parameters(), lr=0.0)
    x, y = TRAIN.x[:32], TRAIN.y[:32]
    memory = PerturbationMemory(len(TRAIN))
    ctx = StepContext(seed=5, index=torch.arange(32), memory=memory)
    xa = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(linear(xa), y, reduction="sum"), xa)
    corner = (x + EPS * grad.sign()).clamp(0, 1) - x
    deltas = []
    for _ in range(5):
        METHODS.get("fast-at").step(linear, opt, x, y, THREAT, ctx, guard="none", init="prior", alpha_factor=0.5)
        deltas.append(memory.delta[:32].float())
    first = deltas[0]
    assert (first - corner).abs().amax() > 0.5 * EPS, "one visit from a random start is not yet at the corner"
    torch.testing.assert_close(deltas[1], (first + 0.5 * EPS * grad.sign()).clamp(-EPS, EPS).clamp(-x, 1 - x),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(deltas[-1], corner, atol=1e-3, rtol=0)  # float16 storage
    assert memory.delta[32:].abs().sum() == 0 and not memory.seen[32:].any()


def test_atta_prior_needs_the_loops_memory_and_plain_fgsm() -> None:
    model, x, y = toy_model(), TRAIN.x[:8], TRAIN.y[:8]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="PerturbationMemory"):
        METHODS.get("fast-at").step(model, opt, x, y, THREAT, guard="none", init="prior")
    with pytest.raises(ValueError, match="guard='none'"):
        METHODS.get("fast-at").step(model, opt, x, y, THREAT, init="prior")
    ctx = StepContext(index=torch.arange(4), memory=PerturbationMemory(len(TRAIN)))
    with pytest.raises(ValueError, match="4 rows"):
        METHODS.get("fast-at").step(model, opt, x, y, THREAT, ctx, guard="none", init="prior")
