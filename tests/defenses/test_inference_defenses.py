"""Every registered inference-time defense: clean cost, the module contract, and what the probe sees."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from bastion.data import load_dataset
from bastion.defenses.inference import DEFENSES, accuracy, build_defense, build_pipeline
from bastion.evaluation.adaptive import probe
from bastion.evaluation.diagnostics import check_randomness
from bastion.threat import LpThreat

THREAT = LpThreat("linf", 0.3)
# Parameters for 8x8 digits (the registry defaults are for 28x28 images) and the allowed clean-accuracy drop here.
DIGITS: dict[str, tuple[dict[str, Any], float]] = {
    "bit-depth": ({}, 0.10),
    "median-filter": ({}, 0.25),  # a 2x2 median removes a lot of an 8x8 image; on MNIST see BENCHMARKS.md
    "non-local-means": ({"search": 5}, 0.05),
    "jpeg": ({}, 0.05),
    "spatial-smoothing": ({}, 0.08),
    "gaussian-noise": ({}, 0.08),
    "thermometer": ({}, 0.05),
    "feature-squeezing-detector": ({}, 0.12),
    "mahalanobis-detector": ({}, 0.12),
    "ensemble-average": ({"mode": "logits"}, 0.0),
    "ensemble-vote": ({}, 0.0),
    "random-ensemble": ({"shift": 0, "sigma": 0.05}, 0.08),
    "dynamic-ensemble": ({"train_points": 300, "epochs": 2, "pgd_steps": 5}, 0.10),
    "distillation": ({"epochs": 4, "train_points": 800, "lr": 3e-3, "temperature": 10.0}, 0.12),
    "pipeline": ({"steps": [{"defense": "feature-squeezing-detector"}, {"defense": "gaussian-noise"}]}, 0.15),
}
NEEDS_28X28 = {"diffpure", "random-resize-pad"}  # tested on mnist-cnn in test_inference_diffpure.py


@pytest.fixture(scope="module")
def digits_train():
    return load_dataset("digits").train


def _build(name: str, model: nn.Module, train) -> nn.Module:
    params, _ = DIGITS[name]
    extra = {"data": train} if DEFENSES.get(name).needs_data else {}
    return build_defense(name, model, **params, **extra)


def test_every_defense_is_covered() -> None:
    assert set(DEFENSES.names()) == set(DIGITS) | NEEDS_28X28


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_contract_and_clean_accuracy(name: str, digits_model, digits_points, digits_train) -> None:
    x, y = digits_points
    before = x.clone()
    defended = _build(name, digits_model, digits_train)
    spec = DEFENSES.get(name)
    out = defended(x)
    extra = 1 if getattr(defended, "reject_class", None) is not None else 0
    assert out.shape == (len(x), 10 + extra) and torch.isfinite(out).all()
    assert torch.equal(x, before), "a defense must not mutate its input"
    assert not defended.training
    base = accuracy(digits_model, x, y)
    assert accuracy(defended, x, y) >= base - DIGITS[name][1] - 1e-9
    if name != "pipeline":  # a pipeline is as randomized as its steps
        assert check_randomness(defended, x).fired == spec.randomized


@pytest.mark.parametrize("name", ["bit-depth", "jpeg", "thermometer", "ensemble-vote", "feature-squeezing-detector"])
def test_probe_finds_the_gradient_blocking_part(name: str, digits_model, digits_points, digits_train) -> None:
    x, y = digits_points
    plan, flags = probe(_build(name, digits_model, digits_train), x[:32], y[:32], THREAT)
    fired = {f.name for f in flags if f.fired}
    assert plan["bpda_modules"] or fired & {"shattered_gradients", "detached_gradients"}


@pytest.mark.parametrize("name", ["gaussian-noise", "random-ensemble", "pipeline"])
def test_probe_finds_randomness(name: str, digits_model, digits_points, digits_train) -> None:
    x, y = digits_points
    plan, flags = probe(_build(name, digits_model, digits_train), x[:32], y[:32], THREAT)
    assert "randomness" in {f.name for f in flags if f.fired} and plan["eot_samples"]


@pytest.mark.parametrize("name", ["median-filter", "non-local-means", "spatial-smoothing", "ensemble-average"])
def test_differentiable_defenses_need_no_adaptation(name: str, digits_model, digits_points, digits_train) -> None:
    """Median filter and NLM are differentiable almost everywhere (torch implementations): no BPDA needed."""
    x, y = digits_points
    plan, _ = probe(_build(name, digits_model, digits_train), x[:32], y[:32], THREAT)
    assert not plan["bpda_modules"] and not plan["eot_samples"]


def test_randomized_defense_is_reproducible_from_its_seed(digits_model, digits_points) -> None:
    x, _ = digits_points
    a = build_defense("gaussian-noise", digits_model, seed=3)
    b = build_defense("gaussian-noise", digits_model, seed=3)
    state = torch.random.get_rng_state()
    assert torch.equal(a(x), b(x))
    assert torch.equal(state, torch.random.get_rng_state()), "defenses must not touch the global RNG"


def test_pipeline_validation(digits_model) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):  # a detector must be outermost
        build_pipeline({"steps": [{"defense": "bit-depth"}, {"defense": "mahalanobis-detector"}]}, digits_model)
    with pytest.raises(Exception, match="Unknown defense"):
        build_pipeline({"steps": [{"defense": "bit-dept"}]}, digits_model)
    yaml_text = "steps:\n  - defense: bit-depth\n    params: {bits: 2}\n  - defense: spatial-smoothing\n"
    defended = build_pipeline(yaml_text, digits_model)
    assert defended.preprocess.bits == 2 and defended.model.preprocess.__class__.__name__ == "GaussianBlur"
