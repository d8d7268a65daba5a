"""DeepFool, L2 and L-inf, batched.

Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR (Algorithm 2 for several classes, section 3.3 for Lp). Each iteration linearizes the
model around the current point and steps onto the nearest linearized decision boundary among the
``candidates - 1`` most likely other classes (ranked by the clean logits); the accumulated
perturbation is scaled by ``1 + overshoot`` (0.02) and clipped to the box. A point stops as soon as it
is adversarial (per-sample early stopping); points not broken within ``max_iter`` (50) are returned
unchanged. Targeted: the linearized boundary between the target and the best other class.
``threat.eps`` is not used (this is a minimal-norm attack).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import is_adversarial
from bastion.oracle import attribute
from bastion.threat import LpThreat, lp_norms

TINY = 1e-4  # the authors' code adds this to the distance to the boundary, to cross it


def _forward(model: nn.Module, x_adv: Tensor, index: Tensor, with_grad: bool) -> tuple[Tensor, Tensor]:
    """The logits at ``x_adv`` (with the graph kept when ``with_grad``) and the input they were computed from."""
    x_adv = x_adv.detach().requires_grad_(with_grad)
    with torch.set_grad_enabled(with_grad), attribute(model, index):
        return model(x_adv), x_adv


def _boundaries(logits: Tensor, x_adv: Tensor, labels: Tensor, others: Tensor | None, *, targeted: bool,
                candidates: int) -> tuple[Tensor, Tensor, Tensor]:
    """f_k = z_k - z_own and w_k = grad f_k for each considered class k, and those classes, from ``logits``
    (computed with the graph from ``x_adv``).

    Untargeted: own = the label, k in ``others`` (on the first call, when ``others`` is None, the
    ``candidates - 1`` most likely non-label classes at ``x_adv``). Targeted: k = the target, own = the
    current best non-target class.
    """
    if targeted:
        own = logits.detach().scatter(1, labels[:, None], float("-inf")).argmax(1)
        others = labels[:, None]
    else:
        own = labels
        if others is None:
            others = _classes(logits.detach(), labels, candidates)
    diffs = logits.gather(1, others) - logits.gather(1, own[:, None])
    grads = [
        torch.autograd.grad(diffs[:, k].sum(), x_adv, retain_graph=k < diffs.shape[1] - 1)[0]
        for k in range(diffs.shape[1])
    ]
    return diffs.detach(), torch.stack(grads, 1), others


def _step(diffs: Tensor, grads: Tensor, norm: str) -> Tensor:
    """Step onto the nearest linearized boundary, a little past it: the distance |f_l| / ||w_l||_q plus
    ``TINY`` along w_l / ||w_l||_2 (L2) or sign(w_l) (L-inf), as in the authors' code."""
    flat = grads.flatten(2)  # (N, K, D)
    dual = lp_norms(flat, 2 if norm == "l2" else 1, dim=2).clamp_min(1e-12)  # (N, K)
    dist = diffs.abs() / dual
    nearest = dist.argmin(1)
    rows = torch.arange(flat.shape[0], device=flat.device)
    length = dist[rows, nearest] + TINY
    w = flat[rows, nearest]
    step = w * (length / dual[rows, nearest])[:, None] if norm == "l2" else w.sign() * length[:, None]
    return step.view(grads.shape[0], *grads.shape[2:])


def _classes(logits: Tensor, labels: Tensor, candidates: int) -> Tensor:
    """(N, K) classes whose boundaries are considered: the most likely non-label classes (untargeted)."""
    ranking = logits.argsort(1, descending=True)
    k = max(1, min(candidates, logits.shape[1]) - 1)
    others = ranking[ranking != labels[:, None]].view(logits.shape[0], -1)
    return others[:, :k]


@register_attack(
    "deepfool",
    norms=("l2", "linf"),
    goal="minimal",
    paper="Moosavi-Dezfooli et al. 2016, DeepFool: a simple and accurate method to fool deep neural networks",
)
def deepfool(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DeepFool. Costs at most ``max_iter + 1`` forward and ``max_iter * (candidates - 1)`` backward passes
    per point (one backward when targeted); ``generator`` is unused (the attack is deterministic)."""
    if threat.norm not in ("l2", "linf"):
        raise ValueError(f"DeepFool supports l2 and linf; got {threat.norm}. Use fmn or apgd for l1.")
    x = inputs.detach()
    keep_mask = None if threat.mask is None else threat.mask.to(device=x.device, dtype=x.dtype).expand_as(x)
    # The working batch: rows still attacked, compacted as points break (no gather/scatter per iteration).
    active = torch.arange(x.shape[0], device=x.device)
    xs, xa, r, ya = x, x.clone(), torch.zeros_like(x), labels
    cls: Tensor | None = None  # candidate classes, ranked by the clean logits on the first iteration
    best = x.clone()
    scale = 1 + overshoot
    for it in range(max_iter + 1):
        logits, x_grad = _forward(model, xa, active, with_grad=it < max_iter)
        hit = is_adversarial(logits.detach(), ya, targeted)
        if it == max_iter or bool(hit.all()):  # checked before the backward passes: none are spent on a done batch
            best[active[hit]] = xa[hit]
            break
        diffs, grads, cls = _boundaries(logits, x_grad, ya, cls, targeted=targeted, candidates=candidates)
        if bool(hit.any()):
            best[active[hit]] = xa[hit]
            keep = ~hit
            active, xs, xa, r, ya, diffs, grads, cls = (
                t[keep] for t in (active, xs, xa, r, ya, diffs, grads, cls))
        if keep_mask is not None:
            grads = grads * keep_mask[active][:, None]
        r = r + _step(diffs, grads, threat.norm)
        xa = torch.add(xs, r, alpha=scale).clamp_(*threat.bounds(xs))
        # keep the accumulated step equal to what the box let through: a component clipped away at a
        # pixel's bound must not have to be undone by later steps before they take effect there
        r = (xa - xs).div_(scale)
    return best.detach()
