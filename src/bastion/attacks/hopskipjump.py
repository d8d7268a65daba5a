"""HopSkipJump: decision-based minimal-norm attack, L2 and L-inf, batched over samples.

Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE S&P.
From an adversarial start (blended uniform noise, Section 4), each iteration t:

1. estimates the gradient direction at the current boundary point from ``B_t`` label queries at
   ``x_t + delta_t u_b`` with a baseline (eq. 12-16), ``B_t = init_evals * sqrt(t)`` up to ``max_evals``;
2. steps along it (L2: the normalized estimate; L-inf: its sign) with the geometric step-size search
   starting at ``dist / sqrt(t)`` and halving until the point is adversarial;
3. returns to the boundary with a binary search towards the original input (tolerance ``theta``).

Defaults from the paper and its reference code: gamma = 1, theta = gamma / d^(3/2) (L2) or gamma / d^2
(L-inf), delta_t = sqrt(d) theta dist (L2) or d theta dist (L-inf) and 0.1 * (upper - lower) at t = 1,
init_evals = 100, max_evals = 10,000; 64 iterations or ``max_queries = 25,000`` per sample (the
largest budget in the paper's figures), whichever comes first.

All samples run together: one batched query for all gradient-estimation points of all samples, and
batched step-size and binary searches. Only labels are read (``query_labels``). The attack's own
budget is never exceeded; a sample that runs out keeps its last adversarial point. Returns the
adversarial point of smallest norm found per sample (possibly outside ``threat``'s eps, goal="minimal"),
or the input itself when no adversarial start was found.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.blackbox.decision import Decider, boundary_search, feature_mask, find_starts
from bastion.blackbox.target import partial_results
from bastion.threat import LpThreat


@register_attack(
    "hopskipjump",
    norms=("l2", "linf"),
    goal="minimal",
    access="decision",
    paper="Chen, Jordan & Wainwright 2020, HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
    randomized=True,
)
def hopskipjump(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 64,
    max_queries: int = 25_000,
    init_evals: int = 100,
    max_evals: int = 10_000,
    gamma: float = 1.0,
    init_tries: int = 100,
    starting_points: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """HopSkipJump. ``starting_points`` (adversarial inputs, e.g. images of the target class) skip the
    noise search; targeted attacks usually need them."""
    if threat.norm not in ("l2", "linf"):
        raise ValueError(f"hopskipjump supports l2 and linf, not {threat.norm}")
    if steps < 1 or max_queries < 1 or init_evals < 1:
        raise ValueError("steps, max_queries and init_evals must be at least 1")
    best = inputs.clone()
    decide = Decider(model, labels, targeted, max_queries)
    with partial_results(best):
        starts, found = find_starts(decide, inputs, threat, generator, tries=init_tries,
                                    starting_points=starting_points)
        _iterate(decide, inputs, starts, found, best, threat, generator, steps=steps,
                 init_evals=init_evals, max_evals=max_evals, gamma=gamma)
    return best


def _iterate(decide: Decider, x0: Tensor, starts: Tensor, found: Tensor, best: Tensor, threat: LpThreat,
             gen: torch.Generator | None, *, steps: int, init_evals: int, max_evals: int,
             gamma: float) -> None:
    norm = threat.norm
    d = math.prod(x0.shape[1:])
    theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / d**2
    mask = feature_mask(threat, x0)
    rows = torch.arange(x0.shape[0], device=x0.device)[found]
    best[rows] = starts[rows]
    moved = (starts[rows] - x0[rows]).flatten(1).abs().amax(1) > 0
    rows = rows[moved]  # inputs already adversarial are done at distance 0
    current = starts.clone()
    current[rows] = boundary_search(decide, x0[rows], starts[rows], rows, norm, theta)
    best[rows] = current[rows]
    for t in range(1, steps + 1):
        rows = rows[decide.affordable(rows, 2)]
        if rows.numel() == 0:
            break
        xt, origin = current[rows], x0[rows]
        dist = _dist(xt - origin, norm)
        if t == 1:
            delta = torch.full_like(dist, 0.1 * threat.width())
        else:
            delta = (math.sqrt(d) if norm == "l2" else d) * theta * dist
        evals = min(int(init_evals * math.sqrt(t)), max_evals)
        grad = _estimate(decide, xt, rows, delta, evals, threat, None if mask is None else mask[rows], gen)
        direction = grad if norm == "l2" else grad.sign()
        stepped, ok = _step_search(decide, xt, direction, dist / math.sqrt(t), rows, threat)
        if ok.any():
            current[rows[ok]] = boundary_search(decide, origin[ok], stepped[ok], rows[ok], norm, theta)
        improved = _dist(current[rows] - origin, norm) < _dist(best[rows] - origin, norm)
        best[rows[improved]] = current[rows[improved]]


def _dist(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(1)


def _estimate(decide: Decider, xt: Tensor, rows: Tensor, delta: Tensor, evals: int, threat: LpThreat,
              mask: Tensor | None, gen: torch.Generator | None) -> Tensor:
    """Monte-Carlo estimate of the boundary normal at ``xt`` with the paper's baseline; unit L2 norm.

    Each sample spends ``min(evals, left - 1)`` queries (one is kept for the step-size search).
    """
    a = xt.shape[0]
    shape = (a, evals, *xt.shape[1:])
    if threat.norm == "l2":
        u = torch.randn(shape, generator=gen, device=xt.device, dtype=xt.dtype)
    else:
        u = torch.rand(shape, generator=gen, device=xt.device, dtype=xt.dtype) * 2 - 1
    if mask is not None:
        u = u * mask[:, None]
    u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(a, evals, *([1] * (xt.dim() - 1)))
    dv = delta.view(a, 1, *([1] * (xt.dim() - 1)))
    points = threat.clip(xt[:, None] + dv * u)
    u = (points - xt[:, None]) / dv
    budget = torch.clamp(decide.left(rows) - 1, max=evals)
    valid = torch.arange(evals, device=xt.device)[None] < budget[:, None]  # (a, evals)
    owner = rows[:, None].expand(a, evals)[valid]
    signs = torch.zeros((a, evals), device=xt.device, dtype=xt.dtype)
    signs[valid] = decide(points[valid], owner).to(xt.dtype) * 2 - 1
    count = valid.sum(1).clamp_min(1).to(xt.dtype)
    mean = signs.sum(1) / count
    # Baseline: subtract the mean decision unless all agree (then the mean direction is used, eq. 16).
    centred = torch.where((mean.abs() == 1)[:, None], signs, (signs - mean[:, None]) * valid)
    ones = [1] * (xt.dim() - 1)
    grad = (centred.view(a, evals, *ones) * u).sum(1) / count.view(-1, *ones)
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *ones)


def _step_search(decide: Decider, xt: Tensor, direction: Tensor, eps: Tensor, rows: Tensor,
                 threat: LpThreat, halvings: int = 30) -> tuple[Tensor, Tensor]:
    """Geometric step-size search: halve the step until ``xt + eps * direction`` is adversarial."""
    stepped = xt.clone()
    ok = torch.zeros(rows.shape[0], dtype=torch.bool, device=xt.device)
    open_ = torch.ones_like(ok)
    e = eps.clone()
    for _ in range(halvings):
        open_ &= decide.affordable(rows)
        if not open_.any():
            break
        view = e[open_].view(-1, *([1] * (xt.dim() - 1)))
        candidate = threat.clip(xt[open_] + view * direction[open_])
        adv = decide(candidate, rows[open_])
        idx = open_.nonzero().squeeze(1)
        stepped[idx[adv]] = candidate[adv]
        ok[idx[adv]] = True
        open_[idx[adv]] = False
        e[idx[~adv]] /= 2
    return stepped, ok
