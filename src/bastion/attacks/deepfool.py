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
from bastion.threat import LpThreat

TINY = 1e-4  # the paper's code adds this to the step to cross the boundary


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _boundaries(model: nn.Module, x_adv: Tensor, labels: Tensor, others: Tensor | None, index: Tensor,
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, f_k = z_k - z_own and w_k = grad f_k for each considered class k, as (N, K) and (N, K, ...).

    Untargeted (``others`` given): own = the label, k in ``others``. Targeted (``others`` None):
    k = the target, own = the current best non-target class.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with attribute(model, index):
        logits = model(x_adv)
    if others is None:
        own = logits.detach().scatter(1, labels[:, None], float("-inf")).argmax(1)
        others = labels[:, None]
    else:
        own = labels
    diffs = logits.gather(1, others) - logits.gather(1, own[:, None])
    grads = [
        torch.autograd.grad(diffs[:, k].sum(), x_adv, retain_graph=k < diffs.shape[1] - 1)[0]
        for k in range(diffs.shape[1])
    ]
    return logits.detach(), diffs.detach(), torch.stack(grads, 1)


def _step(diffs: Tensor, grads: Tensor, norm: str) -> Tensor:
    """Step onto the nearest linearized boundary: |f_l| / ||w_l||_q^q * w_l (L2) or sign(w_l) (L-inf)."""
    flat = grads.flatten(2)  # (N, K, D)
    dual = flat.norm(p=2 if norm == "l2" else 1, dim=2).clamp_min(1e-12)  # (N, K)
    dist = diffs.abs() / dual
    nearest = dist.argmin(1)
    pick = nearest[:, None]
    f = diffs.gather(1, pick).squeeze(1).abs() + TINY
    w = flat[torch.arange(flat.shape[0], device=flat.device), nearest]
    d = dual.gather(1, pick).squeeze(1)
    step = w * (f / d**2)[:, None] if norm == "l2" else w.sign() * (f / d)[:, None]
    return step.view(grads.shape[0], *grads.shape[2:])


def _classes(model: nn.Module, x: Tensor, labels: Tensor, candidates: int, index: Tensor) -> Tensor:
    """(N, K) classes whose boundaries are considered: the most likely non-label classes (untargeted)."""
    with torch.no_grad(), attribute(model, index):
        logits = model(x)
    ranking = logits.argsort(1, descending=True)
    k = max(1, min(candidates, logits.shape[1]) - 1)
    others = ranking[ranking != labels[:, None]].view(x.shape[0], -1)
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
    n = x.shape[0]
    keep_mask = None if threat.mask is None else threat.mask.to(device=x.device, dtype=x.dtype).expand_as(x)
    active = torch.arange(n, device=x.device)
    others = None if targeted else _classes(model, x, labels, candidates, active)
    r_total = torch.zeros_like(x)
    best = x.clone()
    x_adv = x.clone()
    for it in range(max_iter + 1):
        xa, ya = x_adv[active], labels[active]
        if it < max_iter:
            cls = None if others is None else others[active]
            logits, diffs, grads = _boundaries(model, xa, ya, cls, active)
        else:
            with torch.no_grad(), attribute(model, active):
                logits = model(xa)
        hit = is_adversarial(logits, ya, targeted)
        best[active[hit]] = xa[hit]
        if it == max_iter or hit.all():
            break
        keep = ~hit
        active, diffs, grads = active[keep], diffs[keep], grads[keep]
        if keep_mask is not None:
            grads = grads * keep_mask[active][:, None]
        r_total[active] += _step(diffs, grads, threat.norm)
        x_adv[active] = (x[active] + (1 + overshoot) * r_total[active]).clamp(threat.lower, threat.upper)
    return best.detach()
