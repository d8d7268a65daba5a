"""Adversarial weight perturbation (AWP) on top of PGD-AT or TRADES.

Wu, Xia & Wang 2020, "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS. After the
input attack, perturb every weight matrix/kernel ``w_l`` (parameters with more than one dimension) by one
normalised ascent step ``v_l = gamma ||w_l|| g_l / ||g_l||`` on the training loss, take the gradient at
``w + v``, remove ``v`` and update. ``gamma = 5e-3`` (the paper's value for PGD-AT and TRADES). The paper
removes ``v`` after the optimizer step; removing it before is the same update for additive optimizers
(SGD, Adam) except that weight decay acts on ``w`` instead of ``w + v``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.training.base import (
    StepContext,
    StepStats,
    all_reduce_,
    batch_mean,
    register_method,
    sync_gradients,
)
from bastion.defenses.training.pgd_at import pgd_examples
from bastion.defenses.training.trades import BETA, trades_examples, trades_loss
from bastion.threat import LpThreat

GAMMA = 5e-3


def weight_perturbation(model: nn.Module, loss: Tensor, ctx: StepContext, gamma: float = GAMMA) -> list[Tensor]:
    """Layer-wise ``gamma ||w|| g / ||g||`` for each parameter with ``dim > 1`` (zeros for the others)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach().clone() for p, g in zip(params, grads, strict=True)]
    all_reduce_(grads, ctx)
    out = []
    for p, g in zip(params, grads, strict=True):
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
        else:
            out.append(gamma * p.detach().norm() * g / (g.norm() + 1e-20))
    return out


def _shift(model: nn.Module, deltas: list[Tensor], sign: float) -> None:
    with torch.no_grad():
        for p, d in zip([p for p in model.parameters() if p.requires_grad], deltas, strict=True):
            p.add_(d, alpha=sign)


@register_method("awp", paper="Wu et al. 2020, Adversarial Weight Perturbation Helps Robust Generalization",
                 description="PGD-AT or TRADES with an adversarial weight perturbation (gamma 5e-3).")
def awp_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext = StepContext(),
    *,
    base: Literal["pgd-at", "trades"] = "pgd-at",
    gamma: float = GAMMA,
    beta: float = BETA,
    steps: int | None = None,
    step_size: float | None = None,
    early_stop_tau: int | None = None,
) -> StepStats:
    """One AWP step; ``steps`` defaults to the base method's (7 for PGD-AT, 10 for TRADES)."""
    if base == "pgd-at":
        x_adv, iters = pgd_examples(model, x, y, threat, ctx, steps=steps or 7, step_size=step_size,
                                    early_stop_tau=early_stop_tau)

        def objective() -> Tensor:
            return batch_mean(F.cross_entropy(model(x_adv), y, reduction="none"), ctx)
        per_pass = 1
    elif base == "trades":
        x_adv, iters = trades_examples(model, x, y, threat, ctx, steps=steps or 10, step_size=step_size,
                                       early_stop_tau=early_stop_tau)

        def objective() -> Tensor:
            return batch_mean(trades_loss(model, x, x_adv, y, beta), ctx)
        per_pass = 2
    else:
        raise ValueError(f"Unknown AWP base {base!r}; use 'pgd-at' or 'trades'.")
    model.train()
    v = weight_perturbation(model, objective(), ctx, gamma)
    _shift(model, v, +1.0)
    try:
        loss = objective()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients([p for p in model.parameters() if p.requires_grad], ctx)
    finally:
        _shift(model, v, -1.0)
    optimizer.step()
    n = x.shape[0]
    passes = (iters + 2 * per_pass) * n
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, passes, passes)
