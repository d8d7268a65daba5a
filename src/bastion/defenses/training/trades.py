"""TRADES: trade clean accuracy against robustness with a KL term.

Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML. Loss ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` where ``x'`` maximises the KL by PGD
from ``x + 0.001 N(0, 1)``. Defaults are the paper's CIFAR-10 setting: ``beta = 6``, 10 steps of
0.007 at eps 0.031 (a step of 0.2258 eps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.training.base import (
    StepContext,
    StepStats,
    batch_mean,
    eval_mode,
    normal_like,
    perturb,
    register_method,
    update,
)
from bastion.threat import LpThreat

BETA = 6.0
STEP_FACTOR = 0.007 / 0.031


def kl_per_sample(logits_nat: Tensor, logits_adv: Tensor) -> Tensor:
    """KL(softmax(nat) || softmax(adv)) per sample."""
    p = F.softmax(logits_nat, dim=1)
    return (p * (F.log_softmax(logits_nat, dim=1) - F.log_softmax(logits_adv, dim=1))).sum(1)


def trades_examples(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext, *,
                    steps: int = 10, step_size: float | None = None, early_stop_tau: int | None = None,
                    ) -> tuple[Tensor, int]:
    """PGD on the KL to the clean prediction, from a small Gaussian start (labels unused but for FAT)."""
    with eval_mode(model), torch.no_grad():
        nat = model(x)
    start = threat.project(x + 0.001 * normal_like(ctx, x), x)
    size = step_size if step_size is not None else threat.eps_for(x) * STEP_FACTOR
    x_adv, iters = perturb(model, x, y, threat, ctx, loss_fn=lambda logits, _y: kl_per_sample(nat, logits),
                           steps=steps, step_size=size, start=start, early_stop_tau=early_stop_tau)
    return x_adv, iters + 1


def trades_loss(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """Per-sample TRADES objective (model in train mode)."""
    logits_nat, logits_adv = model(x), model(x_adv)
    return F.cross_entropy(logits_nat, y, reduction="none") + beta * kl_per_sample(logits_nat, logits_adv)


@register_method("trades", paper="Zhang et al. 2019, Theoretically Principled Trade-off between Robustness and "
                 "Accuracy", description="CE on clean inputs + beta * KL to PGD-KL examples (beta 6).")
def trades_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext = StepContext(),
    *,
    beta: float = BETA,
    steps: int = 10,
    step_size: float | None = None,
    early_stop_tau: int | None = None,
) -> StepStats:
    """One TRADES step: ``steps + 1`` attack forwards, ``steps`` attack backwards, 2 training passes per sample."""
    x_adv, iters = trades_examples(model, x, y, threat, ctx, steps=steps, step_size=step_size,
                                   early_stop_tau=early_stop_tau)
    model.train()
    loss = batch_mean(trades_loss(model, x, x_adv, y, beta), ctx)
    update(model, optimizer, loss, ctx)
    n = x.shape[0]
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, (iters + 2) * n, (iters + 1) * n)
