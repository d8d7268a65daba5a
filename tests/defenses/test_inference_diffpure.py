"""28x28 defenses on the shipped mnist-cnn: DiffPure with the shipped tiny DDPM, and random resize-and-pad."""

from __future__ import annotations

import pytest
import torch

from bastion.data import load_dataset
from bastion.defenses.inference import accuracy, build_defense
from bastion.defenses.inference.diffpure import load_ddpm
from bastion.evaluation.adaptive import probe
from bastion.threat import LpThreat
from bastion.zoo import load_model


@pytest.fixture(scope="module")
def mnist_points():
    test = load_dataset("mnist").test
    return test.x[:200], test.y[:200]


@pytest.fixture(scope="module")
def mnist_cnn():
    return load_model("mnist-cnn")[0]


@pytest.mark.parametrize("ddpm", ["ddpm-mnist", "ddpm-fashion"])
def test_shipped_ddpms_load(ddpm: str) -> None:
    net, steps = load_ddpm(ddpm)
    assert steps >= 100 and not net.training


def test_diffpure_keeps_clean_accuracy_and_is_randomized(mnist_cnn, mnist_points) -> None:
    x, y = mnist_points
    defended = build_defense("diffpure", mnist_cnn, reverse="ddim", ddim_steps=5)
    assert accuracy(defended, x, y) >= accuracy(mnist_cnn, x, y) - 0.10
    plan, flags = probe(defended, x[:16], y[:16], LpThreat("linf", 0.3))
    assert "randomness" in {f.name for f in flags if f.fired} and plan["eot_samples"]
    assert not plan["bpda_modules"]  # differentiable end to end


def test_diffpure_gradients_flow_through_the_purifier(mnist_cnn, mnist_points) -> None:
    x, y = mnist_points
    for gradient in ("full", "bpda"):
        defended = build_defense("diffpure", mnist_cnn, reverse="ddim", ddim_steps=2, gradient=gradient)
        probe_x = x[:4].clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(defended(probe_x), y[:4]).backward()
        assert probe_x.grad is not None and probe_x.grad.abs().sum() > 0


def test_random_resize_pad(mnist_cnn, mnist_points) -> None:
    x, y = mnist_points
    defended = build_defense("random-resize-pad", mnist_cnn)
    assert accuracy(defended, x, y) >= accuracy(mnist_cnn, x, y) - 0.10
    plan, flags = probe(defended, x[:16], y[:16], LpThreat("linf", 0.3))
    assert "randomness" in {f.name for f in flags if f.fired} and plan["eot_samples"]
