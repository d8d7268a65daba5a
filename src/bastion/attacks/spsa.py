"""SPSA gradient estimation with Adam and projection; score-based.

Uesato, O'Donoghue, van den Oord & Kohli 2018, "Adversarial Risk and the Dangers of Evaluating Against
Weak Attacks", ICML. Each iteration draws ``samples`` Rademacher directions ``v`` (in antithetic
pairs), estimates the gradient of the margin loss as
``mean((f(x + delta v) - f(x - delta v)) / (2 delta) * v)``
(Spall 1992) and applies an Adam step to the perturbation, then projects onto the threat set.

Defaults: perturbation size delta = 0.01 and Adam learning rate 0.01 as in the paper; 128 samples
per estimate and 100 iterations as in the authors' reference implementation (cleverhans
``SPSAAdam``); the paper's large-scale runs use bigger batches. The paper's loss is the margin (logit
difference), ``loss="cw"`` here. Costs ``samples + 1`` queries per iteration; stops a sample as soon as
it is adversarial.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.blackbox.zeroth import LossOracle, adam_step, projected_ascent, view_as_batch
from bastion.threat import LpThreat


@register_attack(
    "spsa",
    norms=("linf", "l2"),
    goal="budget",
    access="score",
    paper="Uesato et al. 2018, Adversarial Risk and the Dangers of Evaluating Against Weak Attacks",
    randomized=True,
)
def spsa(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 100,
    samples: int = 128,
    delta: float = 0.01,
    lr: float = 0.01,
    max_queries: int | None = None,
    loss: str = "cw",
    generator: torch.Generator | None = None,
) -> Tensor:
    """SPSA-Adam. ``max_queries`` (per sample) defaults to what ``steps`` iterations cost."""
    if steps < 1 or samples < 2 or delta <= 0:
        raise ValueError("steps must be >= 1, samples >= 2 and delta positive")
    half = (samples + 1) // 2
    budget = max_queries if max_queries is not None else steps * (2 * half + 1) + 1

    def estimate(f: LossOracle, x: Tensor, gen: torch.Generator | None) -> tuple[Tensor, None]:
        a = x.shape[0]
        v = torch.randint(0, 2, (a, half, *x.shape[1:]), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        pairs = torch.cat([x[:, None] + delta * v, x[:, None] - delta * v], dim=1)
        owner = torch.arange(a, device=x.device).repeat_interleave(2 * half)
        values = f(threat.clip(pairs).flatten(0, 1), owner).view(a, 2, half)
        diff = (values[:, 0] - values[:, 1]) / (2 * delta)
        return (view_as_batch(diff, v) * v).mean(1), None

    return projected_ascent(
        model, inputs, labels, threat, targeted=targeted, loss=loss, max_queries=budget,
        cost=2 * half, estimate=estimate, step=adam_step(inputs, lr), generator=generator,
    )
