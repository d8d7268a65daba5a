"""N-FGSM: single-step adversarial examples with strong noise and no projection.

de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania 2022, "Make Some Noise: Reliable and Efficient
Single-Step Adversarial Training", NeurIPS. Start from ``x + U(-k, k)`` with ``k = 2 eps`` and take one
FGSM step of ``alpha = eps`` *without* projecting back onto the eps-ball (only onto the input box), so the
training perturbation reaches up to ``3 eps``. The paper shows this avoids catastrophic overfitting at the
cost of one forward and one backward pass (no extra regulariser, unlike GradAlign).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.steps import lp_step
from bastion.defenses.training.base import StepContext, eval_mode, uniform_like
from bastion.threat import LpThreat

NOISE_FACTOR = 2.0  # k = 2 eps (de Jorge et al. 2022)
STEP_FACTOR = 1.0  # alpha = eps


def n_fgsm_examples(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext, *,
                    noise_factor: float = NOISE_FACTOR, step_factor: float = STEP_FACTOR) -> Tensor:
    """``clip_box(x + eta + alpha * sign(grad))`` with ``eta ~ U(-k, k)``; L-inf only (as in the paper)."""
    if threat.norm != "linf":
        raise ValueError("N-FGSM is defined for the L-inf threat model; use guard='none' for other norms.")
    eps = threat.eps_for(x).view(-1, *([1] * (x.dim() - 1)))
    start = (x + (2 * uniform_like(ctx, x) - 1) * noise_factor * eps).clamp(*threat.bounds(x))
    with eval_mode(model):
        xa = start.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
    step = lp_step(grad, threat.eps_for(x) * step_factor, "linf")
    return (start + step).clamp(*threat.bounds(x)).detach()
