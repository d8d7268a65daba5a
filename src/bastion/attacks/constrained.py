"""What the constraint-respecting attacks on tabular data share (CPGD, CAPGD, MoEvA2, CAA).

They run inside a ``bastion.threats.tabular.TabularThreat``: they move only ``threat.free`` features, evaluate the
model on ``threat.complete(x)`` (derived features recomputed, differentiably), pass every candidate through
``threat.project`` (the repair operator) and keep, per point, the best candidate that ``threat.contains`` accepts.

Scaled space: feature ``j`` is measured in units of ``threat.scale[j]``; the ball is a ball there. A gradient ``g``
in raw units is ``g * scale`` in the scaled space, and a scaled step ``d`` moves the raw row by ``d * scale``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.losses import cross_entropy, is_adversarial
from bastion.errors import InvalidInputError
from bastion.threat import project_ball

Threat = Any  # a TabularThreat (duck-typed: the attacks use only the methods named in the module docstring)


def check_threat(threat: Threat, inputs: Tensor, name: str) -> None:
    """One clear line when an attack for tabular threats gets something else."""
    if getattr(threat, "kind", None) != "tabular":
        raise InvalidInputError(f"{name} needs a tabular threat (bastion.threats.tabular.TabularThreat), got "
                                f"{getattr(threat, 'kind', type(threat).__name__)!r}; build one for your columns.")
    if inputs.dim() != 2:
        raise InvalidInputError(f"{name} takes rows of features (N, D); got shape {tuple(inputs.shape)}.")


def free_mask(threat: Threat, like: Tensor) -> Tensor:
    """``threat.free`` as a ``(1, D)`` float mask on ``like``'s device and dtype."""
    return threat.free.to(device=like.device, dtype=like.dtype)[None]


def scale_of(threat: Threat, like: Tensor) -> Tensor:
    """``threat.scale`` as ``(1, D)`` on ``like``'s device and dtype."""
    return threat.scale.to(device=like.device, dtype=like.dtype)[None]


def objective(model: nn.Module, x: Tensor, labels: Tensor, threat: Threat, *, targeted: bool,
              weight: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Simonetto et al.'s constrained loss ``CE(model(complete(x)), y) - weight * penalty(x)`` and its gradient.

    One forward and one backward pass. Returns (total, ce, d total / d x, logits), all detached; the model's
    parameter gradients are untouched."""
    x = x.detach().requires_grad_(True)
    completed = threat.complete(x)
    logits = model(completed)
    ce = cross_entropy(logits, labels, targeted)
    total = ce - weight * threat.penalty(completed) if weight else ce
    (grad,) = torch.autograd.grad(total.sum(), x)
    return total.detach(), ce.detach(), grad.detach(), logits.detach()


def ascent(x: Tensor, grad: Tensor, step: Tensor, threat: Threat) -> Tensor:
    """``x`` moved by ``step`` (per sample, scaled units) along the steepest ascent of the threat's norm in the
    scaled space, on the free features only: ``x + step * scale * dir`` with ``dir = sign(g * scale)`` (L-inf) or
    ``g * scale / ||g * scale||`` (L2)."""
    scale = scale_of(threat, x)
    g = grad * scale * free_mask(threat, x)
    if threat.norm == "linf":
        direction = g.sign()
    else:
        direction = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-12)
    return x + step[:, None] * scale * direction


def relax(threat: Threat, x: Tensor, inputs: Tensor, *, ball: bool = True) -> Tensor:
    """A continuous projection for attacks that keep a real-valued iterate and repair each candidate with
    ``threat.project``: the free features into the ball (scaled space, unless ``ball=False``) and the box, every
    other feature back to its input value, derived features recomputed. No integer rounding and no inequality
    repair (a small step on a packet count would round back to the input every time). Differentiable where
    ``complete`` is."""
    scale, free = scale_of(threat, inputs), free_mask(threat, inputs) > 0
    delta = ((x - inputs) / scale).masked_fill(~free, 0.0)
    if ball:
        delta = project_ball(delta, threat.eps_for(inputs).to(inputs.dtype), threat.norm)
    lower = threat.lower.to(device=inputs.device, dtype=inputs.dtype)
    upper = threat.upper.to(device=inputs.device, dtype=inputs.dtype)
    return threat.complete(torch.minimum(torch.maximum(inputs + delta * scale, lower), upper))


class Best:
    """Per point, the best candidate ``threat.contains`` accepted: a valid adversarial one beats a valid one that is
    not; between two of the same kind the higher score (the classification loss) wins. ``result`` falls back to
    the given projected iterate where no candidate was valid."""

    def __init__(self, inputs: Tensor, labels: Tensor, targeted: bool) -> None:
        n = inputs.shape[0]
        self.x = inputs.clone()
        self.labels, self.targeted = labels, targeted
        self.valid = torch.zeros(n, dtype=torch.bool, device=inputs.device)
        self.adv = torch.zeros_like(self.valid)
        self.score = torch.full((n,), float("-inf"), device=inputs.device, dtype=inputs.dtype)

    def update(self, cand: Tensor, logits: Tensor, score: Tensor, valid: Tensor, rows: Tensor | None = None) -> None:
        """Offer projected candidates (their logits, scores and validity) for the points ``rows`` (all if None)."""
        rows = torch.arange(self.x.shape[0], device=cand.device) if rows is None else rows
        adv = valid & is_adversarial(logits, self.labels[rows], self.targeted)
        old_adv, old_score = self.adv[rows], self.score[rows]
        better = valid & (~self.valid[rows] | (adv & ~old_adv) | ((adv == old_adv) & (score > old_score)))
        take = rows[better]
        self.x[take] = cand[better].detach()
        self.valid[take], self.adv[take] = True, adv[better]
        self.score[take] = score[better].to(self.score.dtype)  # a float32 model may attack float64 rows

    def result(self, fallback: Tensor) -> Tensor:
        """The best valid candidates, and ``fallback`` (the projected last iterate) where none was valid."""
        return torch.where(self.valid[:, None], self.x, fallback).detach()


def check_count(name: str, **counts: int) -> None:
    """Counts (steps, generations, population) must be at least 1."""
    for key, value in counts.items():
        if value < 1:
            raise InvalidInputError(f"{name}: {key} must be at least 1; got {value}.")
