"""Projected Gradient Descent with random start and restarts, for L-inf, L2 and L1.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR. The L1 version uses the sparse steepest-ascent step of Tramer & Boneh 2019.

Per-sample early stopping: a point leaves the batch as soon as it is adversarial, and restarts are
spent only on points no earlier restart broke. For points never broken the iterate with the highest
loss is returned (best-so-far).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import LOSSES, input_gradient, is_adversarial
from bastion.attacks.steps import lp_step
from bastion.oracle import attribute
from bastion.threat import LpThreat

STEP_FACTOR = 2.5  # Madry et al.: step size 2.5 * eps / steps


@register_attack(
    "pgd",
    norms=("linf", "l2", "l1"),
    goal="budget",
    paper="Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks",
    randomized=True,
)
def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = True,
    loss: str = "ce",
    l1_sparsity: float = 0.99,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD. ``step_size`` defaults to 2.5 * eps / steps (per sample when eps is per sample).

    Costs at most ``restarts * (steps + 1)`` forward and ``restarts * steps`` backward passes per point.
    """
    if steps < 1 or restarts < 1:
        raise ValueError("steps and restarts must be at least 1")
    eps = threat.eps_for(inputs)
    step = torch.full_like(eps, step_size) if step_size is not None else STEP_FACTOR * eps / steps
    best = inputs.clone()
    remaining = torch.arange(inputs.shape[0], device=inputs.device)
    for restart in range(restarts):
        if remaining.numel() == 0:
            break
        adv, broken = _run(
            model, inputs[remaining], labels[remaining], threat.select(remaining), remaining, step[remaining],
            steps=steps, random_init=random_init, loss=loss, targeted=targeted,
            l1_sparsity=l1_sparsity, generator=generator,
        )
        # Unbroken points keep the first restart's best iterate unless broken later.
        best[remaining[broken]] = adv[broken]
        if restart == 0:
            best[remaining[~broken]] = adv[~broken]
        remaining = remaining[~broken]
    return best.detach()


def _run(
    model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, index: Tensor, step: Tensor, *,
    steps: int, random_init: bool, loss: str, targeted: bool, l1_sparsity: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One PGD run from one start. Returns (best iterate per point, broken mask)."""
    loss_fn = LOSSES[loss]
    x_adv = threat.random_start(x, generator) if random_init else x.clone()
    out = x_adv.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    for t in range(steps + 1):
        xa = x_adv[active]
        with attribute(model, index[active]):
            if t < steps:
                logits, grad = input_gradient(model, xa, y[active], loss_fn, targeted)
            else:
                with torch.no_grad():
                    logits = model(xa)
        values = loss_fn(logits, y[active], targeted)
        hit = is_adversarial(logits, y[active], targeted)
        better = (values > best_loss[active]) | hit
        out[active[better]] = xa[better]
        best_loss[active[better]] = values[better]
        broken[active[hit]] = True
        if t == steps or hit.all():
            break
        keep = ~hit
        active, grad = active[keep], grad[keep]
        moved = x_adv[active] + lp_step(grad, step[active], threat.norm, x=x_adv[active],
                                        lower=threat.lower, upper=threat.upper, l1_sparsity=l1_sparsity)
        x_adv[active] = threat.select(active).project(moved, x[active])
    return out, broken
