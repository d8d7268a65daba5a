"""The L1 pieces of APGD (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers", ICML): the sparse step on the top-k coordinates of the gradient and the exact projection onto the L1
ball intersected with the box. ``apgd.py`` runs them; its adaptive-sparsity rule sits in its checkpoint."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.threat import Bound


def project_l1_box(delta: Tensor, inputs: Tensor, eps: Tensor, lower: Bound, upper: Bound,
                   frozen: Tensor | None = None, iters: int = 40) -> Tensor:
    """Exact Euclidean projection of ``delta`` onto {||d||_1 <= eps, lower <= inputs + d <= upper}.

    Coordinate-wise the solution is sign(delta) * clip(|delta| - lam, 0, room); lam >= 0 is found by
    bisection so that the L1 norm is at most eps (Croce & Hein 2021 solve the same problem by sorting).
    """
    flat, x = delta.flatten(1), inputs.flatten(1)
    room = torch.where(flat > 0, upper - x, x - lower).clamp_min(0)
    if frozen is not None:
        room = room.masked_fill(frozen.flatten(1), 0.0)
    mag = flat.abs()

    def shrunk(lam: Tensor) -> Tensor:
        return torch.minimum((mag - lam[:, None]).clamp_min(0), room)

    lo = torch.zeros_like(eps)
    hi = torch.where(shrunk(lo).sum(1) > eps, mag.amax(1), lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        over = shrunk(mid).sum(1) > eps
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return (flat.sign() * shrunk(hi)).view_as(delta)


def l1_step(grad: Tensor, x_adv: Tensor, step: Tensor, topk: Tensor, lower: Bound, upper: Bound) -> Tensor:
    """Move the top-``topk`` fraction of coordinates (by |grad|) with equal magnitude, L1 length ``step``."""
    flat, xf = grad.flatten(1), x_adv.flatten(1)
    blocked = ((xf >= upper) & (flat > 0)) | ((xf <= lower) & (flat < 0))
    mag = flat.abs().masked_fill(blocked, 0.0)
    d = flat.shape[1]
    rank = ((1.0 - topk) * d).long().clamp(0, d - 1)
    threshold = mag.sort(1).values.gather(1, rank[:, None])
    chosen = (mag >= threshold) & (mag > 0)
    direction = flat.sign() * chosen
    count = chosen.sum(1).clamp_min(1).to(grad.dtype)
    return (direction * (step / count)[:, None]).view_as(grad)
