"""GradAlign: a gradient-alignment regulariser that keeps single-step training from overfitting catastrophically.

Andriushchenko & Flammarion 2020, "Understanding and Improving Fast Adversarial Training", NeurIPS.
Catastrophic overfitting comes with a loss that is no longer locally linear: the input gradient at ``x``
and at a random point ``x + eta`` of the eps-ball point in different directions, so FGSM's one step
misses the worst case. GradAlign adds

    lambda * mean(1 - cos(grad_x l(x, y), grad_x l(x + eta, y))),   eta ~ U([-eps, eps]^d)

to the training loss. Both gradients are taken with ``create_graph=True`` so the term trains the
weights (double backpropagation: about three times the cost of FGSM-RS training, the price the N-FGSM
paper compares against). The paper trains on plain FGSM (zero init, step eps) with ``lambda = 0.2`` at
CIFAR-10 eps 8/255, interpolated log-linearly to 2.0 at 16/255; no value is given for MNIST.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.training.base import StepContext, uniform_like
from bastion.threat import LpThreat

LAMBDA = 0.2  # CIFAR-10, eps 8/255 (Andriushchenko & Flammarion 2020)
SALT = 7  # keeps eta independent of the FGSM random start drawn from the same per-batch seed


def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    xa = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa, create_graph=True)
    return grad.flatten(1)


def grad_align_penalty(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, ctx: StepContext) -> Tensor:
    """Per-sample ``1 - cos`` between the input gradients at ``x`` and at a uniform point of the L-inf ball.

    Differentiable in the model's parameters; the model is used in its current mode (training mode
    during a step, as the training loss is).
    """
    if threat.norm != "linf":
        raise ValueError("GradAlign is defined for the L-inf threat model; use guard='none' for other norms.")
    eps = threat.eps_for(x).view(-1, *([1] * (x.dim() - 1)))
    eta = (2 * uniform_like(ctx, x, SALT) - 1) * eps
    g_clean = _input_grad(model, x, y)
    g_noisy = _input_grad(model, threat.clip(x + eta), y)
    return 1.0 - F.cosine_similarity(g_clean, g_noisy, dim=1, eps=1e-12)
