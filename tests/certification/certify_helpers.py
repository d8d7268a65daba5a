"""Helpers of the certification tests: small models, a seeded trainer and a minimal PGD.

A uniquely named module (not ``conftest``) so that ``import`` cannot pick up another directory's conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Normalize(nn.Module):
    """The affine-normalization protocol the certifiers accept: (x - mean) / std with buffers."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([std]).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny tensors: on a busy 2-core machine two intra-op threads make them many times slower
    (spin-waiting), so run single-threaded and restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, seed: int = 0, lr: float = 1e-2,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> nn.Module:
    """Adam on random minibatches of 128; the order comes from a seeded generator."""
    with single_thread():
        return _fit(model, x, y, steps=steps, seed=seed, lr=lr, loss_fn=loss_fn)


def _fit(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, seed: int, lr: float,
         loss_fn: Callable[[Tensor, Tensor], Tensor] | None) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        opt.zero_grad()
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx]) if loss_fn is None else loss_fn(logits, y[idx])
        loss.backward()
        opt.step()
    return model.eval()


def digits_mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():  # seeded init that leaves the global RNG as it was
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        )


def digits_cnn(seed: int = 0) -> nn.Sequential:
    """Every layer type CROWN supports: Normalize, Conv2d, BatchNorm2d, ReLU, AvgPool2d, nested Sequential."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            Normalize(0.3, 0.4),
            nn.Conv2d(1, 8, 3, stride=1, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Flatten(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10),
        )


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, norm: str, *, steps: int = 40,
        generator: torch.Generator, lower: float = 0.0, upper: float = 1.0) -> Tensor:
    """A minimal PGD (Madry et al. 2018) on the margin loss, L-inf or L2, per-sample ``eps``; returns the
    iterate with the largest margin loss seen (inside the ball and the box). Kept here so the
    certification tests do not depend on the attack package."""
    e = torch.as_tensor(eps, dtype=x.dtype).expand(x.shape[0]).view(-1, *([1] * (x.dim() - 1)))

    def project(delta: Tensor) -> Tensor:
        if norm == "linf":
            delta = torch.maximum(torch.minimum(delta, e), -e)
        else:
            n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(e[:, :1].flatten(1)).view(e.shape)
            delta = delta * torch.clamp(e / n, max=1.0)
        return (x + delta).clamp(lower, upper) - x

    def loss_of(z: Tensor) -> Tensor:
        own = z.gather(1, y[:, None]).squeeze(1)
        return z.scatter(1, y[:, None], float("-inf")).amax(1) - own

    delta = project((torch.rand(x.shape, generator=generator) * 2 - 1) * e)
    best, best_loss = x + delta, torch.full((x.shape[0],), float("-inf"))
    step = 2.5 * e / steps
    for _ in range(steps + 1):
        delta.requires_grad_(True)
        loss = loss_of(model(x + delta))
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            better = loss > best_loss
            best[better], best_loss[better] = (x + delta)[better], loss[better]
            if norm == "linf":
                move = grad.sign()
            else:
                move = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            delta = project(delta + step * move)
    return best.detach()
