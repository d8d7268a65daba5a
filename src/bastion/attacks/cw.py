"""Carlini & Wagner's L2 attack.

Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P. Minimizes
``||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)`` (targeted:
``max(max_{i != t} Z_i - Z_t, -kappa)``) over ``x' = lower + (upper - lower) * (tanh(w) + 1) / 2``
with Adam (learning rate 0.01), and finds the constant ``c`` per sample by binary search. Defaults
are those of the authors' reference code (9 search steps from c = 1e-3, multiplying c by 10 until
the first success, early abort when the objective has not fallen by 0.01 % over a tenth of the
iterations) with 1000 iterations instead of their 10,000: at these defaults a normally trained
network is broken on essentially every point (the weak-default complaint against other libraries
comes from a fixed c and few steps).

Early abort is per sample: a point whose objective stalls leaves the working batch. The result is the
adversarial example with the smallest L2 norm found over all constants (best-so-far), or the input
itself where none was found. ``threat.eps`` is not used (this is a minimal-norm attack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import is_adversarial, margin
from bastion.attacks.steps import select_rows
from bastion.oracle import attribute
from bastion.threat import Bound, LpThreat

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
C_CEILING = 1e10  # "no upper bound on c yet"


@dataclass
class _Search:
    """Per-sample binary-search state over the constant c and the best result so far."""

    const: Tensor
    low: Tensor
    high: Tensor
    best_norm: Tensor
    best_adv: Tensor

    def update(self, succeeded: Tensor) -> None:
        """The reference code's rule: halve the interval, or multiply c by 10 while unbounded."""
        self.high = torch.where(succeeded, torch.minimum(self.high, self.const), self.high)
        self.low = torch.where(succeeded, self.low, torch.maximum(self.low, self.const))
        bounded = self.high < C_CEILING / 10
        self.const = torch.where(bounded, (self.low + self.high) / 2, self.const * 10)


def to_tanh_space(x: Tensor, lower: Bound, upper: Bound) -> Tensor:
    width = upper - lower
    if isinstance(width, Tensor):  # per-feature bounds: a constant feature (width 0) maps to w = 0 and stays put
        width = width.clamp_min(torch.finfo(x.dtype).tiny)
    unit = (x - lower) / width * 2 - 1
    return torch.atanh(unit.clamp(-1, 1) * (1 - 1e-6))


def from_tanh_space(w: Tensor, lower: Bound, upper: Bound) -> Tensor:
    half = (upper - lower) / 2  # lower + (tanh(w) + 1) / 2 * (upper - lower), in three passes instead of five
    return torch.tanh(w) * half + (lower + half)


def _objective(model: nn.Module, w: Tensor, x: Tensor, y: Tensor, const: Tensor, threat: LpThreat,
               frozen: Tensor | None, kappa: float, targeted: bool) -> tuple[Tensor, ...]:
    """One forward and backward: (objective, its gradient in w, candidate x', its squared L2, success)."""
    w = w.detach().requires_grad_(True)
    x_adv = from_tanh_space(w, *threat.bounds(w))
    if frozen is not None:
        x_adv = torch.where(frozen, x, x_adv)
    logits = model(x_adv)
    gap = margin(logits, y, targeted)  # > 0 means adversarial
    dist = (x_adv - x).flatten(1).pow(2).sum(1)
    objective = dist + const * (kappa - gap).clamp_min(0)  # = dist + c * max(-gap, -kappa)
    (grad,) = torch.autograd.grad(objective.sum(), w)
    success = is_adversarial(logits.detach(), y, targeted) & (gap.detach() >= kappa)
    return objective.detach(), grad.detach(), x_adv.detach(), dist.detach(), success


def _adam(w: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (Kingma & Ba 2015), element-wise, so rows can leave the batch freely.

    w - lr m_hat / (sqrt(v_hat) + eps) with the bias corrections folded into scalars, and the moments
    updated in place (``m`` and ``v`` belong to the caller's loop alone): seven passes over the batch, not 14.
    """
    b1, b2 = ADAM_BETAS
    m = m.lerp_(grad, 1 - b1)  # b1 m + (1 - b1) g
    v = v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = v.sqrt().div_(math.sqrt(1 - b2**t)).add_(ADAM_EPS)
    return torch.addcdiv(w, m, denom, value=-lr / (1 - b1**t)), m, v


def _minimize(model: nn.Module, x: Tensor, y: Tensor, w0: Tensor, search: _Search, threat: LpThreat,
              frozen: Tensor | None, *, kappa: float, targeted: bool, lr: float, max_iterations: int,
              abort_early: bool) -> Tensor:
    """Adam on every point for the current constants; updates ``search``'s best. Returns success per point.

    The working tensors hold only the points still optimized (an early-aborted point leaves them); the best
    results are kept per working row and written back when a point leaves or the search step ends.
    """
    n = x.shape[0]
    rows = search.best_norm.ne(0).nonzero().flatten()  # points already adversarial at zero norm are done
    xs, ys, cs, w = x[rows], y[rows], search.const[rows], w0[rows]
    fz = None if frozen is None else frozen[rows]
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    best_norm, best_adv = search.best_norm[rows], search.best_adv[rows]
    prev = torch.full((rows.numel(),), float("inf"), device=x.device, dtype=x.dtype)
    hit = torch.zeros(rows.numel(), dtype=torch.bool, device=x.device)
    succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
    check_every = max(1, max_iterations // 10)

    def write_back(leaving: Tensor) -> None:
        out = rows[leaving]
        search.best_norm[out], search.best_adv[out] = best_norm[leaving], best_adv[leaving]
        succeeded[out] = hit[leaving]

    for it in range(max_iterations):
        if rows.numel() == 0:
            break
        with attribute(model, rows):
            obj, grad, x_adv, dist, success = _objective(model, w, xs, ys, cs, threat, fz, kappa, targeted)
        norm = dist.sqrt()
        better = success & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best_adv = select_rows(better, x_adv, best_adv)
        hit |= success
        w, m, v = _adam(w, grad, m, v, it + 1, lr)
        if abort_early and (it + 1) % check_every == 0:
            keep = obj < prev * 0.9999  # strict, so that a zero objective stops too
            if not bool(keep.all()):
                write_back(~keep)
                rows, xs, ys, cs, w, m, v = rows[keep], xs[keep], ys[keep], cs[keep], w[keep], m[keep], v[keep]
                fz = None if fz is None else fz[keep]
                best_norm, best_adv, hit = best_norm[keep], best_adv[keep], hit[keep]
                obj = obj[keep]
            prev = obj
    write_back(torch.ones_like(hit))
    return succeeded


@register_attack(
    "cw",
    norms=("l2",),
    goal="minimal",
    paper="Carlini & Wagner 2017, Towards Evaluating the Robustness of Neural Networks",
)
def carlini_wagner_l2(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    confidence: float = 0.0,
    learning_rate: float = 0.01,
    initial_const: float = 1e-3,
    binary_search_steps: int = 9,
    max_iterations: int = 1000,
    abort_early: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """C&W L2. ``confidence`` is kappa: the required logit margin of the adversarial class.

    Costs at most ``binary_search_steps * max_iterations`` forward and backward passes per point;
    ``generator`` is unused (the attack is deterministic).
    """
    if binary_search_steps < 1 or max_iterations < 1:
        raise ValueError("binary_search_steps and max_iterations must be at least 1")
    if threat.norm != "l2":
        raise ValueError(f"C&W here is the L2 attack; got a {threat.norm} threat. Use fmn or apgd instead.")
    x = inputs.detach()
    n = x.shape[0]
    frozen = None if threat.mask is None else ~threat.mask.to(device=x.device, dtype=torch.bool).expand_as(x)
    full = torch.full((n,), float(initial_const), device=x.device, dtype=x.dtype)
    search = _Search(
        const=full, low=torch.zeros_like(full), high=torch.full_like(full, C_CEILING),
        best_norm=torch.full_like(full, float("inf")), best_adv=x.clone(),
    )
    with torch.no_grad():
        logits = model(x)
    clean = is_adversarial(logits, labels, targeted) & (margin(logits, labels, targeted) >= confidence)
    search.best_norm[clean] = 0.0  # already adversarial: the input itself is the minimal example
    w0 = to_tanh_space(x, *threat.bounds(x))
    for _ in range(binary_search_steps):
        succeeded = _minimize(
            model, x, labels, w0, search, threat, frozen, kappa=confidence, targeted=targeted,
            lr=learning_rate, max_iterations=max_iterations, abort_early=abort_early,
        )
        search.update(succeeded)
    return threat.clip(search.best_adv).detach()
