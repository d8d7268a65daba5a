"""PGD adversarial training.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR. Minimise the cross-entropy on the last iterate of a random-start PGD attack. Defaults are
the paper's CIFAR-10 setting: 7 steps of 2/255 at eps 8/255, i.e. a step of eps / 4. (Its MNIST setting,
40 steps of 0.01 at eps 0.3, is ``steps=40, step_size=0.01``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.training.base import StepContext, StepStats, batch_mean, perturb, register_method, update
from bastion.threat import LpThreat


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext, *,
                 steps: int = 7, step_size: float | None = None, early_stop_tau: int | None = None,
                 ) -> tuple[Tensor, int]:
    """Madry et al.'s inner maximisation: random start, ``steps`` PGD steps on the cross-entropy."""
    size = step_size if step_size is not None else threat.eps_for(x) / 4.0
    return perturb(model, x, y, threat, ctx, loss_fn=_ce, steps=steps, step_size=size,
                   early_stop_tau=early_stop_tau)


@register_method("pgd-at", paper="Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks",
                 description="Cross-entropy on PGD examples (7 steps of eps/4 by default).")
def pgd_at_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext = StepContext(),
    *,
    steps: int = 7,
    step_size: float | None = None,
    early_stop_tau: int | None = None,
) -> StepStats:
    """One PGD-AT step: craft PGD examples in eval mode, then one optimizer step on their cross-entropy.

    ``early_stop_tau`` turns the attack into Friendly AT's early-stopped PGD (used by the automatic schedule).
    Costs ``steps + 1`` forward and backward passes per sample.
    """
    x_adv, iters = pgd_examples(model, x, y, threat, ctx, steps=steps, step_size=step_size,
                                early_stop_tau=early_stop_tau)
    model.train()
    loss = batch_mean(_ce(model(x_adv), y), ctx)
    update(model, optimizer, loss, ctx)
    n = x.shape[0]
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, (iters + 1) * n, (iters + 1) * n)
