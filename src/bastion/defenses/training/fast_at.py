"""Fast adversarial training: FGSM from a random start, with a guard against catastrophic overfitting.

Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial training", ICLR. One FGSM
step of ``alpha = 1.25 eps`` from ``x + U(-eps, eps)``, projected onto the eps-ball; one forward and one
backward pass for the attack, so an epoch costs about twice standard training.

Single-step training can collapse ("catastrophic overfitting": PGD accuracy falls to ~0 within an
epoch while FGSM accuracy rises). Two guards:

* prevention: ``guard="n-fgsm"`` crafts the examples with N-FGSM (de Jorge et al. 2022, ``n_fgsm.py``)
  instead of FGSM-RS; ``guard="none"`` is Wong et al.'s FGSM-RS;
* detection: the training loop checks PGD accuracy on a fixed validation batch and rolls back to the last
  good weights and stops when it collapses (Wong et al.'s early stopping; see ``guard.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.steps import lp_step
from bastion.defenses.training.base import (
    StepContext,
    StepStats,
    batch_mean,
    eval_mode,
    random_start,
    register_method,
    update,
)
from bastion.defenses.training.n_fgsm import n_fgsm_examples
from bastion.threat import LpThreat

ALPHA_FACTOR = 1.25  # Wong et al. 2020: alpha = 1.25 eps


def fgsm_rs_examples(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext, *,
                     alpha_factor: float = ALPHA_FACTOR) -> Tensor:
    """FGSM-RS: uniform start in the ball, one step of ``alpha_factor * eps``, projection onto the ball and box."""
    start = random_start(threat, x, ctx)
    with eval_mode(model):
        xa = start.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    step = lp_step(grad, threat.eps_for(x) * alpha_factor, threat.norm)
    return threat.project(start + step, x).detach()


@register_method("fast-at", paper="Wong et al. 2020, Fast is better than free: Revisiting adversarial training; "
                 "guard: de Jorge et al. 2022, Make Some Noise (N-FGSM)",
                 description="Single-step FGSM-RS (alpha 1.25 eps) or N-FGSM; collapse detection in the loop.")
def fast_at_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext = StepContext(),
    *,
    alpha_factor: float = ALPHA_FACTOR,
    guard: Literal["n-fgsm", "none"] = "n-fgsm",
) -> StepStats:
    """One Fast-AT step (2 forward and 2 backward passes per sample)."""
    if guard == "n-fgsm":
        x_adv = n_fgsm_examples(model, x, y, threat, ctx)
    elif guard == "none":
        x_adv = fgsm_rs_examples(model, x, y, threat, ctx, alpha_factor=alpha_factor)
    else:
        raise ValueError(f"Unknown guard {guard!r}; use 'n-fgsm' or 'none'.")
    model.train()
    loss = batch_mean(F.cross_entropy(model(x_adv), y, reduction="none"), ctx)
    update(model, optimizer, loss, ctx)
    n = x.shape[0]
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, 2 * n, 2 * n)
