"""Fast Gradient Sign Method, and its L2 form (Fast Gradient Method).

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples", ICLR.
One gradient step of length eps; optionally from a random start (Tramer et al. 2018's R+FGSM /
Wong et al. 2020's FGSM-RS use this).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import LOSSES, input_gradient
from bastion.attacks.steps import l2_ascent, lp_step
from bastion.threat import LpThreat, per_sample


@register_attack(
    "fgsm",
    norms=("linf", "l2"),
    goal="budget",
    paper="Goodfellow et al. 2015, Explaining and Harnessing Adversarial Examples",
)
def fgsm(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    loss: str = "ce",
    random_init: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One step of size ``threat.eps`` along the steepest direction of ``loss`` (1 forward + 1 backward)."""
    start = threat.random_start(inputs, generator) if random_init else inputs
    _, grad, _ = input_gradient(model, start, labels, LOSSES[loss], targeted)
    eps = threat.eps_for(inputs)
    if not random_init and threat.mask is None:
        # From the input itself the step has length eps exactly, so it stays in the ball and only the box can cut it
        # (which shortens it): one fused add and one clip instead of the general projection.
        if threat.norm == "linf":
            moved = torch.addcmul(inputs, grad.sign(), per_sample(eps, inputs))
        else:
            moved = l2_ascent(inputs, grad, eps)
        return moved.clamp_(*threat.bounds(moved)).detach()
    step = lp_step(grad, eps, threat.norm)
    return threat.project(start + step, inputs).detach()
