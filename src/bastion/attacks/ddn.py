"""Decoupled Direction and Norm (DDN), a minimal-norm L2 attack.

Rony, Hafemann, Oliveira, Ben Ayed, Sabourin & Granger 2019, "Decoupling Direction and Norm for Efficient
Gradient-Based L2 Adversarial Attacks and Defenses", CVPR (Algorithm 1). The direction and the norm of the
perturbation are optimized apart: the direction ``delta`` takes a step of L2 length alpha along the normalized
gradient of the cross-entropy (ascending the true label's loss; targeted: descending the target's), and the norm
``eps`` is a per-sample radius that shrinks by a factor (1 - gamma) while the current point is adversarial and
grows by (1 + gamma) while it is not. The next point is ``x + eps * delta / ||delta||`` clipped to the box, and
``delta`` carries on from that clipped point. The paper's settings are the defaults: 100 steps, initial norm 1,
gamma 0.05, and alpha cosine-annealed from 1 to 0.01 over the steps (Section 5.1; the authors' adv-lib ``ddn``
does the same).

As in the authors' reference code, the radius never exceeds the distance to the farthest point of the box (a
larger sphere only gets clipped back), and a zero gradient is replaced by a random direction drawn from
``generator``, so that the iterate does not stall at a point where the loss is flat. Two deviations: the paper's
optional quantization of the iterate to 256 levels is left out (bastion's threat model is continuous; adv-lib's
``levels=None`` is the same), and the mask: only the features the threat's ``mask`` frees move (the gradient is
zeroed elsewhere, so the direction, the sphere and the clip never touch them).

The smallest adversarial perturbation seen at any step is returned (best-so-far), or the input itself where
none was found. Per-sample early stopping: a point that is adversarial already at the input (norm 0, which no
later step can beat) leaves the working batch after the first pass. Every other point runs all steps, as in the
paper: the best norm keeps improving as alpha anneals, so stopping a point earlier would trade strength for time.
``threat.eps`` is not used (this is a minimal-norm attack).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import cross_entropy, input_gradient, is_adversarial
from bastion.attacks.steps import row_norms, select_rows
from bastion.oracle import attribution
from bastion.threat import LpThreat, per_sample


def _cosine(start: float, end: float, i: int, steps: int) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * i / steps)) / 2


def _direction(grad: Tensor, keep: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The gradient on the free features, with a random direction instead in rows where it is zero."""
    if keep is not None:
        grad = grad * keep
    flat = row_norms(grad).flatten() == 0
    if bool(flat.any()):
        noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
        grad = select_rows(flat, noise if keep is None else noise * keep, grad)
    return grad


class _State:
    """The working rows of one DDN run: the points still attacked and their iterates, radii and best results."""

    def __init__(self, x: Tensor, labels: Tensor, eps: Tensor, worst: Tensor) -> None:
        self.pos = torch.arange(x.shape[0], device=x.device)
        self.rows = self.pos.cpu()  # the pass counter's rows (changes only when points leave)
        self.x, self.y, self.eps, self.worst = x, labels, eps, worst
        self.xa, self.delta = x.clone(), torch.zeros_like(x)
        self.best_norm = torch.full_like(eps, float("inf"))
        self.best = x.clone()

    def record(self, hit: Tensor) -> None:
        """Keep the current iterate where it is adversarial and smaller than the best so far."""
        norm = row_norms(self.delta).flatten()
        better = hit & (norm < self.best_norm)
        self.best_norm = torch.where(better, norm, self.best_norm)
        self.best = select_rows(better, self.xa, self.best)

    def restrict(self, rows: Tensor, grad: Tensor) -> Tensor:
        """Restrict every working tensor to ``rows`` (a bool mask); returns ``grad`` restricted the same way."""
        self.pos, self.rows = self.pos[rows], self.rows[rows.cpu()]
        self.x, self.y, self.eps, self.worst = self.x[rows], self.y[rows], self.eps[rows], self.worst[rows]
        self.xa, self.delta = self.xa[rows], self.delta[rows]
        self.best_norm, self.best = self.best_norm[rows], self.best[rows]
        return grad[rows]


def _step(s: _State, direction: Tensor, hit: Tensor, alpha: float, gamma: float, threat: LpThreat) -> None:
    """Algorithm 1, lines 5 to 12: move the direction, adapt the radius, put the point on the sphere and clip."""
    delta = torch.addcmul(s.delta, direction, alpha / row_norms(direction).clamp_min_(1e-12))
    s.eps = torch.minimum(s.eps * torch.where(hit, 1 - gamma, 1 + gamma), s.worst)
    scale = per_sample(s.eps, delta) / row_norms(delta).clamp_min_(1e-12)
    s.xa = torch.addcmul(s.x, delta, scale).clamp_(*threat.bounds(s.x))
    s.delta = s.xa - s.x


@register_attack(
    "ddn",
    norms=("l2",),
    goal="minimal",
    paper="Rony et al. 2019, Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks "
    "and Defenses",
)
def ddn(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 100,
    init_norm: float = 1.0,
    gamma: float = 0.05,
    alpha_init: float = 1.0,
    alpha_final: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDN. Costs at most ``steps + 1`` forward and ``steps`` backward passes per point (a point adversarial at
    the input: one of each); ``generator`` draws the random directions that replace zero gradients."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if not 0 < gamma < 1 or init_norm <= 0:
        raise ValueError(f"gamma must lie in (0, 1) and init_norm be positive; got {gamma} and {init_norm}")
    if threat.norm != "l2":
        raise ValueError(f"DDN is an L2 attack; got a {threat.norm} threat. Use fmn for L-inf or L1.")
    x = inputs.detach()
    keep = None if threat.mask is None else threat.mask.to(device=x.device, dtype=x.dtype).expand_as(x)
    lower, upper = threat.bounds(x)
    far = torch.maximum(x - lower, upper - x)
    worst = row_norms(far if keep is None else far * keep).flatten()
    s = _State(x, labels, torch.full_like(worst, float(init_norm)), worst)
    out = x.clone()
    with attribution(model) as point:
        point(s.rows)
        for i in range(steps):
            logits, grad, _ = input_gradient(model, s.xa, s.y, cross_entropy, targeted)
            hit = is_adversarial(logits, s.y, targeted)
            s.record(hit)
            if i == 0 and bool(hit.any()):  # adversarial at the input: norm 0 is the minimum, the point is done
                grad, hit = s.restrict(~hit, grad), hit[~hit]
                point(s.rows)
            if s.pos.numel() == 0:
                return out
            _step(s, _direction(grad, keep, generator), hit, _cosine(alpha_init, alpha_final, i, steps), gamma,
                  threat)
        with torch.no_grad():  # the last step's point has not been checked yet
            s.record(is_adversarial(model(s.xa), s.y, targeted))
    out[s.pos] = s.best
    return out
