"""DeepFool inside a tabular threat with feature constraints.

Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to fool deep neural networks",
CVPR (Algorithm 1 for two classes, Algorithm 2 for several, section 3.3 for Lp). Each iteration linearises the
model around the current point and steps onto the nearest linearised decision boundary among the
``candidates - 1`` most likely other classes; the accumulated perturbation is scaled by ``1 + overshoot`` (0.02,
the paper's). Targeted: the boundary between the target and the best other class. The boundary geometry is
bastion's ``deepfool``'s (``_boundaries``, ``_step``), carried into the constrained space:

- the model is linearised through ``threat.complete`` (derived features recomputed, so a mean follows its sum and
  count and the gradient flows through that relation into the free features);
- distances and steps are in the threat's scaled space, over the free features only (the gradient is
  ``grad * scale`` with every other feature's entry zero): the L2 step is ``|f| / ||w||_2`` along
  ``w / ||w||_2``, the L-inf step ``|f| / ||w||_1`` along ``sign(w)``;
- the walk itself is box-clamped but not held to the budget (``walk`` returns it: DeepFool's minimal point);
  every iterate is repaired with ``threat.project`` (ball, integers, relations) and offered to the tracker of the
  best valid candidate, which the attack returns (registered goal="budget": the repaired point inside the budget).

A point stops when its walk crosses the boundary (DeepFool's rule) or a repaired iterate is a valid adversarial
example. Defaults: overshoot 0.02 (paper), 50 iterations and 10 candidate classes (as bastion's ``deepfool`` and
the authors' code). Costs at most ``2 * (max_iter + 1)`` forward passes (the walk and its repaired candidate) and
``max_iter * (candidates - 1)`` backward passes per point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, check_count, check_threat, free_mask, relax, scale_of
from bastion.attacks.deepfool import _boundaries, _step
from bastion.attacks.losses import is_adversarial, margin
from bastion.oracle import attribution

PAPER = "Moosavi-Dezfooli et al. 2016, DeepFool: a simple and accurate method to fool deep neural networks (CVPR)"

Offer = Callable[[Tensor, Tensor], Tensor]  # offer(walk points, their rows) -> which rows are done


@register_attack("tabular-deepfool", norms=("linf", "l2"), goal="budget", paper=PAPER, threats=("tabular",))
def tabular_deepfool(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DeepFool's walk, every iterate repaired; returns per point the best valid candidate (adversarial first,
    then the highest margin), else the repaired input. ``generator`` is unused (deterministic)."""
    check_threat(threat, inputs, "tabular-deepfool")
    check_count("tabular-deepfool", max_iter=max_iter, candidates=candidates)
    best = Best(inputs, labels, targeted)

    def offer(x: Tensor, rows: Tensor) -> Tensor:
        sub = threat.select(rows)
        cand = sub.project(x, inputs[rows])
        with torch.no_grad():
            logits = model(cand)
        best.update(cand, logits, margin(logits, labels[rows], targeted), sub.contains(cand, inputs[rows]), rows)
        return best.adv[rows]

    walk(model, inputs, labels, threat, targeted=targeted, overshoot=overshoot, max_iter=max_iter,
         candidates=candidates, offer=offer)
    return best.result(threat.project(inputs.clone(), inputs))


def walk(model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, *, targeted: bool = False,
         overshoot: float = 0.02, max_iter: int = 50, candidates: int = 10, offer: Offer | None = None) -> Tensor:
    """DeepFool's iterates in the scaled space of the free features, box-clamped, not projected into the budget;
    returns each point's last iterate (the first that crosses the linearised boundary, or the one where ``offer``
    said it was done). ``offer(x, rows)`` sees every iterate."""
    scale, mask = scale_of(threat, inputs), free_mask(threat, inputs)
    active = torch.arange(inputs.shape[0], device=inputs.device)
    xs, ya, xa, r = inputs.detach(), labels, inputs.detach().clone(), torch.zeros_like(inputs)
    cls: Tensor | None = None
    out = inputs.detach().clone()
    with attribution(model) as point:
        for it in range(max_iter + 1):
            point(active.cpu())
            x_grad = xa.detach().requires_grad_(it < max_iter)
            with torch.set_grad_enabled(it < max_iter):
                logits = model(threat.complete(x_grad))
            done = is_adversarial(logits.detach(), ya, targeted)
            if offer is not None:
                done = done | offer(xa, active)
            out[active] = xa
            if it == max_iter or bool(done.all()):
                break
            diffs, grads, cls = _boundaries(logits, x_grad, ya, cls, targeted=targeted, candidates=candidates)
            keep = ~done
            active, xs, xa, r, ya, diffs, grads, cls = (t[keep] for t in (active, xs, xa, r, ya, diffs, grads, cls))
            r = r + _step(diffs, grads * (scale * mask)[:, None], threat.norm)  # scaled units, free features only
            sub = threat.select(active)
            xa = relax(sub, xs + (1 + overshoot) * r * scale, xs, ball=False).detach()
            r = (xa - xs) / scale / (1 + overshoot) * mask  # what the box let through
    return out
