"""ZOO: coordinate-wise zeroth-order optimization with Adam, plugged into projected steps; score-based.

Chen, Zhang, Sharma, Yi & Hsieh 2017, "ZOO: Zeroth Order Optimization based Black-box Attacks to Deep
Neural Networks without Training Substitute Models", AISec. Each iteration picks ``coordinates`` random
coordinates per sample, estimates each partial derivative with a symmetric difference
``(f(x + h e_i) - f(x - h e_i)) / (2h)`` (eq. 6) and updates those coordinates with Adam (ZOO-ADAM,
Algorithm 2). Instead of the paper's C&W objective with a penalty constant, the loss is ascended inside
the threat set by projection, like PGD. The loss is the paper's margin on log-probabilities
(``loss="cw"`` on ``log_softmax`` of the scores; eq. 4 and 5).

Defaults from the paper: 128 coordinates per iteration, h = 0.0001, Adam learning rate 0.01,
beta1 = 0.9, beta2 = 0.999; 1,000 iterations. Costs ``2 * coordinates + 1`` queries per iteration;
stops a sample as soon as it is adversarial.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import margin
from bastion.blackbox.zeroth import LossOracle, adam_step, projected_ascent
from bastion.threat import LpThreat


def log_prob_margin(scores: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """ZOO's loss (eq. 4, 5 without the confidence cap): the margin of log-probabilities."""
    return margin(scores.log_softmax(1), labels, targeted)


@register_attack(
    "zoo",
    norms=("linf", "l2"),
    goal="budget",
    access="score",
    paper="Chen et al. 2017, ZOO: Zeroth Order Optimization based Black-box Attacks to Deep Neural Networks",
    randomized=True,
)
def zoo(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 1000,
    coordinates: int = 128,
    h: float = 1e-4,
    lr: float = 0.01,
    max_queries: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ZOO-ADAM. ``max_queries`` (per sample) defaults to what ``steps`` iterations cost."""
    if steps < 1 or coordinates < 1 or h <= 0:
        raise ValueError("steps and coordinates must be >= 1 and h positive")
    d = math.prod(inputs.shape[1:])
    k = min(coordinates, d)
    budget = max_queries if max_queries is not None else steps * (2 * k + 1) + 1

    def estimate(f: LossOracle, x: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        a = x.shape[0]
        noise = torch.rand((a, d), generator=gen, device=x.device)
        chosen = noise.topk(k, dim=1).indices  # k distinct random coordinates per sample
        basis = torch.zeros((a, k, d), device=x.device, dtype=x.dtype)
        basis.scatter_(2, chosen[:, :, None], 1.0)
        flat = x.flatten(1)[:, None]
        queries = torch.cat([flat + h * basis, flat - h * basis], dim=1).clamp(*threat.flat_bounds(x))
        owner = torch.arange(a, device=x.device).repeat_interleave(2 * k)
        values = f(queries.view(a * 2 * k, *x.shape[1:]), owner).view(a, 2, k)
        partial = (values[:, 0] - values[:, 1]) / (2 * h)
        grad = torch.zeros((a, d), device=x.device, dtype=x.dtype).scatter_(1, chosen, partial)
        mask = torch.zeros((a, d), device=x.device, dtype=torch.bool).scatter_(1, chosen, True)
        return grad.view_as(x), mask.view_as(x)

    return projected_ascent(
        model, inputs, labels, threat, targeted=targeted, loss=log_prob_margin, max_queries=budget,
        cost=2 * k, estimate=estimate, step=adam_step(inputs, lr), generator=generator,
    )
