"""Pieces shared by the decision-based (label-only) attacks: a counting decision oracle, the start search,
and the batched binary search towards the original input.

Everything here reads labels only, through ``query_labels`` (``model.labels`` on a ``LabelTarget``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bastion.blackbox.target import query_labels
from bastion.oracle import attribute
from bastion.threat import LpThreat


class Decider:
    """``decide(points, rows)`` -> is each point adversarial for original sample ``rows[i]``; counts queries.

    ``max_queries`` is the attack's own per-sample budget (None: unlimited); attacks ask
    ``affordable(rows, k)`` before spending so that it is never exceeded.
    """

    def __init__(self, model: nn.Module, labels: Tensor, targeted: bool, max_queries: int | None) -> None:
        self.model = model
        self.labels = labels
        self.targeted = targeted
        self.max_queries = max_queries
        self.spent = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)

    def __call__(self, points: Tensor, rows: Tensor) -> Tensor:
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=points.device)
        with attribute(self.model, rows):
            predicted = query_labels(self.model, points)
        self.spent += torch.bincount(rows, minlength=self.spent.numel())
        wanted = self.labels[rows]
        return predicted == wanted if self.targeted else predicted != wanted

    def left(self, rows: Tensor) -> Tensor:
        if self.max_queries is None:
            return torch.full_like(rows, 2**62)
        return self.max_queries - self.spent[rows]

    def affordable(self, rows: Tensor, k: int = 1) -> Tensor:
        return self.left(rows) >= k


def feature_mask(threat: LpThreat, like: Tensor) -> Tensor | None:
    """The threat's feature mask broadcast to ``like`` (None when every feature may change)."""
    if threat.mask is None:
        return None
    return threat.mask.to(device=like.device, dtype=torch.bool).expand_as(like)


def find_starts(
    decide: Decider, inputs: Tensor, threat: LpThreat, generator: torch.Generator | None, *,
    tries: int, starting_points: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Adversarial starting points and a found mask, ``(N, ...)`` and ``(N,)``.

    The clean input is checked first (1 query; an input already adversarial is its own start). Then
    ``starting_points`` when given, else uniform noise in the box is drawn up to ``tries`` times until
    adversarial, and the start is moved towards the input by a binary search on the blend
    ``(1 - a) x + a noise`` (tolerance 0.001), as in Brendel et al. 2018 and Chen et al. 2020.
    """
    n = inputs.shape[0]
    rows = torch.arange(n, device=inputs.device)
    found = decide(inputs, rows)
    starts = inputs.clone()
    mask = feature_mask(threat, inputs)
    todo = rows[~found & decide.affordable(rows)]
    if starting_points is not None:
        candidates = starting_points.to(inputs)[todo]
        ok = decide(candidates, todo)
        starts[todo[ok]] = candidates[ok]
        found[todo[ok]] = True
        noise_found = todo[ok]
    else:
        for _ in range(tries):
            todo = todo[decide.affordable(todo)]
            if todo.numel() == 0:
                break
            noise = torch.rand(starts[todo].shape, generator=generator, device=inputs.device,
                               dtype=inputs.dtype)
            lo, hi = threat.bounds(noise)
            noise = lo + (hi - lo) * noise
            if mask is not None:
                noise = torch.where(mask[todo], noise, inputs[todo])
            ok = decide(noise, todo)
            starts[todo[ok]] = noise[ok]
            found[todo[ok]] = True
            todo = todo[~ok]
        noise_found = rows[found & (starts != inputs).flatten(1).any(1)]
    starts[noise_found] = _blend_search(decide, inputs[noise_found], starts[noise_found], noise_found)
    return starts, found


def _blend_search(decide: Decider, x0: Tensor, adv: Tensor, rows: Tensor, tol: float = 1e-3) -> Tensor:
    high = torch.ones(rows.shape[0], device=x0.device, dtype=x0.dtype)
    low = torch.zeros_like(high)
    for _ in range(math.ceil(math.log2(1 / tol))):
        go = decide.affordable(rows)
        if not go.any():
            break
        mid = (high + low) / 2
        ok = decide(_lerp(x0[go], adv[go], mid[go]), rows[go])
        high[go] = torch.where(ok, mid[go], high[go])
        low[go] = torch.where(ok, low[go], mid[go])
    return _lerp(x0, adv, high)


def _lerp(x0: Tensor, adv: Tensor, alpha: Tensor) -> Tensor:
    a = alpha.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - a) * x0 + a * adv


def boundary_search(decide: Decider, x0: Tensor, adv: Tensor, rows: Tensor, norm: str,
                    theta: float) -> Tensor:
    """Batched binary search between ``x0`` and the adversarial ``adv`` (HopSkipJump's Algorithm 1 step).

    L2: along the segment, to relative tolerance ``theta``. L-inf: over the radius of the L-inf ball around
    ``x0`` that ``adv`` is clipped to, to tolerance ``min(theta * dist, theta)``. Returns points on the
    adversarial side; a sample whose budget runs out keeps its last adversarial point.
    """
    if norm == "l2":
        high = torch.ones(rows.shape[0], device=x0.device, dtype=x0.dtype)
        tol = torch.full_like(high, theta)
    else:
        high = (adv - x0).flatten(1).abs().amax(1)
        tol = torch.minimum(high * theta, torch.full_like(high, theta))
    low = torch.zeros_like(high)

    def point(sel: Tensor, alpha: Tensor) -> Tensor:
        if norm == "l2":
            return _lerp(x0[sel], adv[sel], alpha)
        a = alpha.view(-1, *([1] * (x0.dim() - 1)))
        return torch.minimum(torch.maximum(adv[sel], x0[sel] - a), x0[sel] + a)

    while True:
        go = ((high - low) > tol) & decide.affordable(rows)
        if not go.any():
            break
        mid = (high + low) / 2
        ok = decide(point(go, mid[go]), rows[go])
        high[go] = torch.where(ok, mid[go], high[go])
        low[go] = torch.where(ok, low[go], mid[go])
    every = torch.ones_like(high, dtype=torch.bool)
    return point(every, high)
