"""Shared fixtures of the attack tests: linear models with closed-form answers and a tiny digits MLP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from bastion.data import load_dataset

DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}
BOX = {"lower": -10.0, "upper": 10.0}  # wide enough that the box never binds in the linear tests


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def linear_model(classes: int, dim: int = 20, seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(dim, classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(classes, dim, generator=g))
        layer.bias.copy_(torch.randn(classes, generator=g))
    return frozen(layer)


def linear_points(n: int = 16, dim: int = 20, seed: int = 1) -> Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def minimal_norm(model: nn.Linear, x: Tensor, norm: str) -> Tensor:
    """Smallest Lp perturbation that changes a linear classifier's prediction: min_k (z_y - z_k) / ||w_y - w_k||_q."""
    logits = model(x)
    y = logits.argmax(1)
    w = model.weight
    gap = logits.gather(1, y[:, None]) - logits  # (N, C)
    dw = (w[y][:, None, :] - w[None]).norm(p=DUAL[norm], dim=2)  # (N, C)
    dist = gap / dw.clamp_min(1e-12)
    dist[torch.arange(len(y)), y] = float("inf")
    return dist.min(1).values


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """A 64-64-10 MLP trained in well under a second; returns (model, x, y) of 100 correctly classified test points."""
    torch.manual_seed(0)  # test-side training only; attacks themselves never touch the global RNG
    data = load_dataset("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.train.x), data.train.y).backward()
        opt.step()
    frozen(model)
    x, y = data.test.x, data.test.y
    with torch.no_grad():
        right = model(x).argmax(1) == y
    assert right.float().mean() > 0.9
    return model, x[right][:100], y[right][:100]


def success(model: nn.Module, adv: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    with torch.no_grad():
        pred = model(adv).argmax(1)
    return pred == labels if targeted else pred != labels


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The helpers above as a fixture (test files are not a package, so they cannot import this module)."""
    return SimpleNamespace(
        BOX=BOX, frozen=frozen, linear_model=linear_model, linear_points=linear_points,
        minimal_norm=minimal_norm, success=success,
    )
