"""MART: misclassification-aware adversarial training.

Wang, Zou, Yi, Bailey, Ma & Gu 2020, "Improving Adversarial Robustness Requires Revisiting Misclassified
Examples", ICLR. Loss ``BCE(f(x'), y) + beta * KL(f(x) || f(x')) * (1 - f_y(x))`` where the boosted CE
``BCE = CE(f(x'), y) - log(1 - max_{k != y} f_k(x'))`` and ``x'`` is CE-PGD from ``x + 0.001 N(0, 1)``.
Defaults are the paper's CIFAR-10 setting (and its code's): ``beta = 6``, 10 steps of 0.007 at eps 0.031.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.training.base import (
    StepContext,
    StepStats,
    batch_mean,
    normal_like,
    perturb,
    register_method,
    update,
)
from bastion.defenses.training.trades import STEP_FACTOR, kl_per_sample
from bastion.threat import LpThreat

BETA = 6.0


def mart_loss(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """Per-sample MART objective."""
    p_adv = F.softmax(logits_adv, dim=1)
    runner_up = p_adv.scatter(1, y[:, None], float("-inf")).argmax(1)
    boosted = F.cross_entropy(logits_adv, y, reduction="none") - torch.log(
        1.0001 - p_adv.gather(1, runner_up[:, None]).squeeze(1) + 1e-12)
    p_true = F.softmax(logits_nat, dim=1).gather(1, y[:, None]).squeeze(1)
    return boosted + beta * kl_per_sample(logits_nat, logits_adv) * (1.0000001 - p_true)


@register_method("mart", paper="Wang et al. 2020, Improving Adversarial Robustness Requires Revisiting "
                 "Misclassified Examples", description="Boosted CE on PGD examples + beta * (1 - p_y) * KL (beta 6).")
def mart_step(
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
    """One MART step: ``steps`` attack passes, then 2 training forwards and backwards per sample."""
    start = threat.project(x + 0.001 * normal_like(ctx, x), x)
    size = step_size if step_size is not None else threat.eps_for(x) * STEP_FACTOR
    x_adv, iters = perturb(model, x, y, threat, ctx, loss_fn=lambda lg, t: F.cross_entropy(lg, t, reduction="none"),
                           steps=steps, step_size=size, start=start, early_stop_tau=early_stop_tau)
    model.train()
    loss = batch_mean(mart_loss(model(x), model(x_adv), y, beta), ctx)
    update(model, optimizer, loss, ctx)
    n = x.shape[0]
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, (iters + 2) * n, (iters + 1) * n)
