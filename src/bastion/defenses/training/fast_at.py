"""Fast adversarial training: FGSM from a random start, with a guard against catastrophic overfitting.

Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial training", ICLR. One FGSM
step of ``alpha = 1.25 eps`` from ``x + U(-eps, eps)``, projected onto the eps-ball; one forward and one
backward pass for the attack, so an epoch costs about twice standard training.

Single-step training can collapse ("catastrophic overfitting": PGD accuracy falls to ~0 within an
epoch while FGSM accuracy rises). Two guards:

* prevention: ``guard="n-fgsm"`` crafts the examples with N-FGSM (de Jorge et al. 2022, ``n_fgsm.py``)
  instead of FGSM-RS; ``guard="grad-align"`` trains on plain FGSM (no random start, step eps) plus the
  GradAlign regulariser (Andriushchenko & Flammarion 2020, ``grad_align.py``, weight ``grad_align``);
  ``guard="none"`` is Wong et al.'s FGSM-RS;
* detection: the training loop checks PGD accuracy on a fixed validation batch and rolls back to the last
  good weights and stops when it collapses (Wong et al.'s early stopping; see ``guard.py``).

``init="prior"`` (with ``guard="none"``) starts each point's FGSM step from its perturbation of the last
epoch instead of a fresh random start, and stores the result back (ATTA, Zheng et al. 2020, ``atta.py``):
the same two passes per sample, with examples that accumulate one step per epoch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.steps import lp_step
from bastion.defenses.training.atta import prior_start
from bastion.defenses.training.base import (
    StepContext,
    StepStats,
    batch_mean,
    eval_mode,
    random_start,
    register_method,
    update,
)
from bastion.defenses.training.grad_align import LAMBDA, grad_align_penalty
from bastion.defenses.training.n_fgsm import n_fgsm_examples
from bastion.threat import LpThreat

ALPHA_FACTOR = 1.25  # Wong et al. 2020: alpha = 1.25 eps


def fgsm_rs_examples(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext, *,
                     alpha_factor: float = ALPHA_FACTOR, random_init: bool = True,
                     start: Tensor | None = None) -> Tensor:
    """FGSM-RS: uniform start in the ball, one step of ``alpha_factor * eps``, projection onto the ball and box.

    ``random_init=False`` is plain FGSM from ``x`` (GradAlign's setting: with ``alpha_factor >= 1`` the step
    is ``eps * sign(grad)``); ``start`` overrides both (ATTA's stored start).
    """
    if start is None:
        start = random_start(threat, x, ctx) if random_init else x
    with eval_mode(model):
        xa = start.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
    step = lp_step(grad, threat.eps_for(x) * alpha_factor, threat.norm)
    return threat.project(start + step, x).detach()


@register_method("fast-at", paper="Wong et al. 2020, Fast is better than free: Revisiting adversarial training; "
                 "guards: de Jorge et al. 2022, Make Some Noise (N-FGSM); Andriushchenko & Flammarion 2020, "
                 "Understanding and Improving Fast Adversarial Training (GradAlign)",
                 description="Single-step FGSM-RS (alpha 1.25 eps), N-FGSM or FGSM-RS + GradAlign; "
                 "collapse detection in the loop.")
def fast_at_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext = StepContext(),
    *,
    alpha_factor: float = ALPHA_FACTOR,
    guard: Literal["n-fgsm", "grad-align", "none"] = "n-fgsm",
    grad_align: float = LAMBDA,
    init: Literal["random", "prior"] = "random",
) -> StepStats:
    """One Fast-AT step: 2 forward and 2 backward passes per sample. GradAlign adds 2 forwards, the 2
    backwards of its input gradients, and their double backpropagation in the update (counted as 2
    backward passes per gradient): 4 forward and 8 backward passes per sample."""
    if init not in ("random", "prior"):
        raise ValueError(f"Unknown init {init!r}; use 'random' (FGSM-RS) or 'prior' (ATTA).")
    if init == "prior" and guard != "none":
        raise ValueError(f"init='prior' replaces the random start of FGSM-RS; use it with guard='none', "
                         f"not {guard!r}.")
    if init == "prior":
        x_adv = fgsm_rs_examples(model, x, y, threat, ctx, alpha_factor=alpha_factor,
                                 start=prior_start(threat, x, ctx))
        ctx.memory.write(ctx, x_adv - x)  # type: ignore[union-attr]  (prior_start checked it)
    elif guard == "n-fgsm":
        x_adv = n_fgsm_examples(model, x, y, threat, ctx)
    elif guard in ("none", "grad-align"):
        # GradAlign trains on plain FGSM from the clean point (Andriushchenko & Flammarion 2020, sec. 5).
        x_adv = fgsm_rs_examples(model, x, y, threat, ctx, alpha_factor=alpha_factor,
                                 random_init=guard == "none")
    else:
        raise ValueError(f"Unknown guard {guard!r}; use 'n-fgsm', 'grad-align' or 'none'.")
    model.train()
    per_sample = F.cross_entropy(model(x_adv), y, reduction="none")
    aligned = guard == "grad-align"
    if aligned:
        per_sample = per_sample + grad_align * grad_align_penalty(model, x, y, threat, ctx)
    loss = batch_mean(per_sample, ctx)
    update(model, optimizer, loss, ctx)
    n = x.shape[0]
    return StepStats(float(loss.detach()) * ctx.global_size(n) / n, (4 if aligned else 2) * n,
                     (8 if aligned else 2) * n)
