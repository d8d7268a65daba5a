"""NES gradient estimation plugged into projected (PGD-style) steps; score-based.

Ilyas, Engstrom, Athalye & Lin 2018, "Black-box Adversarial Attacks with Limited Queries and
Information", ICML. The gradient of the loss is estimated from ``samples`` queries at
``x + sigma * u`` with antithetic Gaussian directions ``u`` (Algorithm 1, natural evolution strategies)
and followed by a projected signed (L-inf) or normalized (L2) step.

Defaults from the paper (Section 4, ImageNet): sigma = 0.001, 50 samples per estimate, a budget of
10,000 queries per image, learning rate 0.01 at eps = 0.05 (kept here as the ratio step = eps / 5).
Costs ``samples + 1`` queries per iteration and stops a sample as soon as it is adversarial.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.blackbox.zeroth import LossOracle, projected_ascent, sign_step, view_as_batch
from bastion.threat import LpThreat

STEP_RATIO = 0.2  # Ilyas et al.: learning rate 0.01 for eps 0.05


@register_attack(
    "nes",
    norms=("linf", "l2"),
    goal="budget",
    access="score",
    paper="Ilyas et al. 2018, Black-box Adversarial Attacks with Limited Queries and Information",
    randomized=True,
)
def nes(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    max_queries: int = 10_000,
    samples: int = 50,
    sigma: float = 0.001,
    step_size: float | None = None,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> Tensor:
    """NES-PGD. ``step_size`` defaults to eps / 5 (per sample); ``samples`` is rounded up to even."""
    if samples < 2 or sigma <= 0:
        raise ValueError("samples must be at least 2 and sigma positive")
    half = (samples + 1) // 2
    eps = threat.eps_for(inputs)
    step = torch.full_like(eps, step_size) if step_size is not None else STEP_RATIO * eps

    def estimate(f: LossOracle, x: Tensor, gen: torch.Generator | None) -> tuple[Tensor, None]:
        a = x.shape[0]
        u = torch.randn((a, half, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
        u = torch.cat([u, -u], dim=1)
        queries = threat.clip(x[:, None] + sigma * u).flatten(0, 1)
        owner = torch.arange(a, device=x.device).repeat_interleave(2 * half)
        values = f(queries, owner).view(a, 2 * half)
        return (view_as_batch(values, u) * u).mean(1) / sigma, None

    return projected_ascent(
        model, inputs, labels, threat, targeted=targeted, loss=loss, max_queries=max_queries,
        cost=2 * half, estimate=estimate, step=sign_step(step, threat), generator=generator,
    )
