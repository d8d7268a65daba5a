"""Steepest-ascent steps of a given Lp length, per sample."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.threat import Bound, Norm, per_sample


def select_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Row ``i`` of ``a`` where ``mask[i]``, else row ``i`` of ``b``, for finite ``a`` and ``b``: ``torch.lerp``
    with a 0/1 weight, exact for finite values (weight 0 gives ``b``, weight 1 gives ``a``) and on CPU several
    times faster than ``torch.where`` with a broadcast bool mask (18 vs 113 us for 100 MNIST images on the bench
    machine), which matters once per iteration of every attack. A non-finite entry spoils its own row either way
    (0 * inf is nan), so use it for iterates and input gradients, whose non-finite values would already have
    derailed the attack, and not for values that may be inf on purpose."""
    return torch.lerp(b, a, per_sample(mask.to(a.dtype), a))


def l2_ascent(x: Tensor, grad: Tensor, length: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``x + length * grad / ||grad||`` per sample in two passes over the batch (norm, fused add): the L2 step
    of PGD and APGD, the same point as ``x + lp_step(grad, length, "l2")`` up to float rounding. ``out=grad``
    writes the step over a gradient the caller has no further use for (no new buffer)."""
    return torch.addcmul(x, grad, _l2_scale(grad, length), out=out)


def row_norms(t: Tensor) -> Tensor:
    """Per-sample L2 norm shaped ``(N, 1, ..., 1)`` to broadcast over ``t``: one reduction over the trailing
    dimensions, with no flatten or reshape around it (each is an operator call, which counts on small batches)."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim())), keepdim=True)


def _l2_scale(grad: Tensor, length: Tensor) -> Tensor:
    """``length / ||grad||`` per sample, shaped to broadcast over ``grad`` (a zero gradient gets a finite scale)."""
    shaped = length if length.dim() == grad.dim() else per_sample(length, grad)  # a caller may pass it shaped
    return shaped / row_norms(grad).clamp_min_(1e-12)


def lp_step(
    grad: Tensor,
    step_size: Tensor,
    norm: Norm,
    *,
    x: Tensor | None = None,
    lower: Bound = 0.0,
    upper: Bound = 1.0,
    l1_sparsity: float = 0.99,
) -> Tensor:
    """The perturbation of Lp length ``step_size`` that increases a linear model with gradient ``grad`` most.

    L-inf: ``step * sign(g)``. L2: ``step * g / ||g||``. L1: the sparse step of Tramer & Boneh 2019
    ("Adversarial training and robustness for multiple perturbations", SLIDE): move only the
    coordinates whose |g| is above the ``l1_sparsity`` quantile, with equal magnitude, skipping
    coordinates already at a box bound that the gradient pushes outside (needs ``x``).
    """
    if norm == "linf":
        return grad.sign() * per_sample(step_size, grad)
    if norm == "l2":
        return grad * _l2_scale(grad, step_size)
    flat = grad.flatten(1)
    if x is not None:
        xf = x.flatten(1)
        blocked = ((xf >= upper) & (flat > 0)) | ((xf <= lower) & (flat < 0))
        flat = flat.masked_fill(blocked, 0.0)
    d = flat.shape[1]
    k = max(1, math.ceil((1.0 - l1_sparsity) * d))
    top = flat.abs().topk(k, dim=1)
    direction = torch.zeros_like(flat).scatter_(1, top.indices, 1.0) * flat.sign()
    count = direction.abs().sum(1).clamp_min(1.0)
    return (direction * (step_size / count)[:, None]).view_as(grad)
