"""Randomized smoothing: PREDICT and CERTIFY of the Gaussian-smoothed classifier, and noise training.

Cohen, Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via Randomized Smoothing", ICML.

The smoothed classifier is ``g(x) = argmax_c P(f(x + delta) = c)`` with ``delta ~ N(0, sigma^2 I)``.
CERTIFY (the paper's pseudocode): ``n0`` noise samples select the top class ``cA``; ``n`` fresh samples
count it; ``pA`` is the one-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound of its
probability; if ``pA > 1/2`` then ``g`` returns ``cA`` on the whole L2 ball of radius
``sigma * Phi^-1(pA)`` with probability at least ``1 - alpha``, otherwise CERTIFY abstains.
PREDICT: ``n`` samples; return the top class when a two-sided binomial test of its count against the
runner-up's (``p = 1/2``) rejects at level ``alpha``, otherwise abstain. Abstention is class ``-1``.

Noise is drawn only from ``generator``; the same generator state and ``batch_size`` give the same
result. Inputs of any shape work (images, feature vectors); noise samples of several inputs share a
batch, so a batch of many inputs with small ``n`` stays efficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm
from torch import Tensor, nn

from bastion.errors import InvalidInputError

ABSTAIN = -1
PRESETS: dict[str, dict[str, float | int]] = {
    "paper": {"n0": 100, "n": 100_000, "alpha": 0.001},  # Cohen et al.'s CERTIFY settings
    "quick": {"n0": 64, "n": 1_000, "alpha": 0.001},  # smoke tests and CI; radii shrink a lot
}


@dataclass(frozen=True)
class SmoothedPrediction:
    """PREDICT's result per input: class (-1 abstains), the counts of the ``n`` samples, the p-value."""

    prediction: Tensor  # (N,) long
    counts: Tensor  # (N, K) long
    p_value: Tensor  # (N,) float64


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's result per input: class (-1 abstains), L2 radius (0 on abstention), the lower bound
    ``pA`` on the top class's probability, and the counts of the ``n`` estimation samples."""

    prediction: Tensor  # (N,) long
    radius: Tensor  # (N,) float64
    p_lower: Tensor  # (N,) float64
    counts: Tensor  # (N, K) long


def _check(model: nn.Module, x: Tensor, sigma: float, alpha: float, batch_size: int) -> None:
    if model.training:
        raise InvalidInputError("The model is in train mode; call model.eval() before smoothing it.")
    if not sigma > 0:
        raise InvalidInputError(f"sigma must be positive; got {sigma}.")
    if not 0 < alpha < 1:
        raise InvalidInputError(f"alpha must be in (0, 1); got {alpha}.")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1; got {batch_size}.")
    if not torch.isfinite(x).all():
        raise InvalidInputError("Inputs contain NaN or infinite values; clean them before certifying.")


@torch.no_grad()
def sample_counts(
    model: nn.Module, x: Tensor, *, sigma: float, n: int, batch_size: int, generator: torch.Generator | None
) -> Tensor:
    """(N, K) counts of the base classifier's predictions on ``n`` Gaussian samples around each input."""
    if n < 1:
        raise InvalidInputError(f"The number of noise samples must be at least 1; got {n}.")
    total = x.shape[0] * n
    counts: Tensor | None = None
    for start in range(0, total, batch_size):
        owner = torch.arange(start, min(start + batch_size, total), device=x.device) // n
        shape = (owner.numel(), *x.shape[1:])
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        logits = model(x[owner] + sigma * noise)
        if counts is None:
            counts = torch.zeros(x.shape[0], logits.shape[1], dtype=torch.long, device=x.device)
        flat = counts.view(-1)
        flat.index_add_(0, owner * counts.shape[1] + logits.argmax(1), torch.ones_like(owner))
    assert counts is not None
    return counts.view(x.shape[0], -1)


def clopper_pearson_lower(successes: Tensor, trials: int, alpha: float) -> Tensor:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound, exact (0 when no success)."""
    k = successes.detach().cpu().double()
    bound = torch.from_numpy(beta_dist.ppf(alpha, k.numpy(), trials - k.numpy() + 1))
    return torch.where(k > 0, bound.nan_to_num(0.0), 0.0)


def predict(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1_000,
    generator: torch.Generator | None = None,
) -> SmoothedPrediction:
    """Cohen et al.'s PREDICT for a batch ``x``: the smoothed class or -1 (abstain)."""
    _check(model, x, sigma, alpha, batch_size)
    counts = sample_counts(model, x, sigma=sigma, n=n, batch_size=batch_size, generator=generator)
    top2 = counts.topk(min(2, counts.shape[1]), dim=1)
    n_a = top2.values[:, 0].tolist()
    n_b = top2.values[:, 1].tolist() if counts.shape[1] > 1 else [0] * len(n_a)
    p_values = torch.tensor(
        [binomtest(a, a + b, 0.5).pvalue if a + b > 0 else 1.0 for a, b in zip(n_a, n_b, strict=True)],
        dtype=torch.double,
    )
    keep = (p_values <= alpha).to(x.device)
    prediction = torch.where(keep, top2.indices[:, 0], torch.full_like(top2.indices[:, 0], ABSTAIN))
    return SmoothedPrediction(prediction, counts, p_values)


def certify(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1_000,
    generator: torch.Generator | None = None,
) -> Certificate:
    """Cohen et al.'s CERTIFY for a batch ``x``: the class and certified L2 radius, or -1 (abstain)."""
    _check(model, x, sigma, alpha, batch_size)
    selection = sample_counts(model, x, sigma=sigma, n=n0, batch_size=batch_size, generator=generator)
    c_a = selection.argmax(1)
    counts = sample_counts(model, x, sigma=sigma, n=n, batch_size=batch_size, generator=generator)
    p_lower = clopper_pearson_lower(counts.gather(1, c_a[:, None]).squeeze(1), n, alpha)
    certified = p_lower > 0.5
    radius = torch.where(certified, sigma * torch.from_numpy(norm.ppf(p_lower.numpy())), 0.0)
    prediction = torch.where(certified.to(x.device), c_a, torch.full_like(c_a, ABSTAIN))
    return Certificate(prediction, radius.to(x.device), p_lower.to(x.device), counts)


def gaussian_augmentation_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    sigma: float,
    generator: torch.Generator | None = None,
) -> float:
    """One step of training the base classifier on ``x + N(0, sigma^2 I)`` with cross-entropy.

    Cohen et al. train with the same ``sigma`` they certify with. Returns the batch loss.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x + sigma * noise), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
