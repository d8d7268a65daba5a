"""Square Attack: score-based random search with square-shaped updates, L-inf and L2.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV. Algorithm 1 (random search on the margin loss), the L-inf sampling
distribution (Algorithm 2: a square window set to +-eps per channel, vertical-stripe initialization) and
the L2 one (Algorithm 3: two windows, mass moved from the second into the first, pseudo-Gaussian
"meta-square" patterns, grid initialization). The fraction ``p`` of changed pixels follows the paper's
piecewise-constant schedule, halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a
10,000-query run and rescaled to ``max_queries``.

Defaults: ``max_queries = 5000`` (``n_queries`` in the authors' code) and ``p_init = 0.8`` for both
norms, the settings of the standard AutoAttack evaluation (Croce & Hein 2020) by the same authors; the
paper's ImageNet runs use ``p_init = 0.05`` (L-inf) and ``0.1`` (L2). The loss is the margin (to the
target class when targeted).

Queries, per sample: one on the clean input (a point already misclassified stops there), one on the
initialization, then one per iteration until the sample is adversarial or ``max_queries`` are spent.
Inputs that are not ``(N, C, H, W)`` are treated as ``(N, 1, 1, D)`` with ``1 x k`` windows.

Every step is batched over the samples still attacked (kept compacted; no per-sample Python loop): each gets its
own window position, signs and (L2) pattern orientation, as in the authors' per-image loop. An L-inf sign vector
that would leave the window unchanged is redrawn, as the authors' code does, so no query is wasted on it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import is_adversarial, margin
from bastion.attacks.steps import select_rows
from bastion.blackbox.target import partial_results, query_scores
from bastion.oracle import attribute
from bastion.threat import LpThreat

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REDRAWS = 16  # sign vectors drawn at once for an L-inf window; the first that changes it is used


def p_selection(p_init: float, it: int, max_queries: int) -> float:
    """The paper's schedule: ``p_init`` halved at fixed fractions of the (rescaled to 10,000) budget."""
    scaled = int(it / max_queries * 10000)
    return p_init / 2 ** sum(scaled > bound for bound in _HALVINGS)


@register_attack(
    "square",
    norms=("linf", "l2"),
    goal="budget",
    access="score",
    paper="Andriushchenko et al. 2020, Square Attack: a query-efficient black-box adversarial attack "
    "via random search",
    randomized=True,
)
def square(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    max_queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Square Attack; stops each sample at its first adversarial query. See the module docstring."""
    if threat.norm not in ("linf", "l2"):
        raise ValueError(f"square supports linf and l2, not {threat.norm}")
    if max_queries < 2 or not 0 < p_init <= 1:
        raise ValueError("max_queries must be at least 2 and p_init in (0, 1]")
    x = inputs.reshape(inputs.shape[0], 1, 1, -1) if inputs.dim() != 4 else inputs
    best = x.clone()
    with partial_results(best):
        _search(_Oracle(model, inputs.shape, targeted, best), x, labels, threat, max_queries, p_init, generator)
    return best.view_as(inputs)


@dataclass(frozen=True)
class _Oracle:
    """The model as the search queries it: inputs' own shape, the goal, and ``out`` (best so far, all samples)."""

    model: nn.Module
    shape: torch.Size
    targeted: bool
    out: Tensor

    def scores(self, index: Tensor, candidates: Tensor) -> Tensor:
        with attribute(self.model, index):
            return query_scores(self.model, candidates.view(-1, *self.shape[1:]))


@dataclass
class _Active:
    """The samples still attacked, compacted: original indices and per-sample state, one row each.

    ``lo``/``hi`` (L-inf only) are ``x - eps`` and ``x + eps`` projected onto the threat (box, mask): an L-inf
    candidate takes each pixel from ``best``, ``lo`` or ``hi``, so it is inside the threat without a projection.
    """

    index: Tensor
    x: Tensor
    y: Tensor
    eps: Tensor
    best: Tensor
    margin: Tensor
    lo: Tensor
    hi: Tensor

    def keep(self, rows: Tensor) -> _Active:
        return _Active(*(getattr(self, f.name)[rows] for f in fields(self)))


def _search(oracle: _Oracle, x: Tensor, y: Tensor, threat: LpThreat, max_queries: int, p_init: float,
            gen: torch.Generator | None) -> None:
    """Algorithm 1 over the batch; per sample: the clean query, the initialization, then one query per step."""
    linf = threat.norm == "linf"
    state = _start(threat, x, y, oracle.shape)
    try:
        state = _evaluate(oracle, state, x, accept_all=True, done=False)
        if state.index.numel():
            init = _init_linf(state, gen) if linf else _project(
                threat, state, _init_l2(state.x, state.eps, gen), oracle.shape)
            state = _evaluate(oracle, state, init, accept_all=False, done=max_queries <= 2)
        spent = 2
        while state.index.numel():
            p = p_selection(p_init, spent - 1, max_queries)
            cand = _propose_linf(state, p, gen) if linf else _project(
                threat, state, _propose_l2(state, p, gen), oracle.shape)
            spent += 1
            state = _evaluate(oracle, state, cand, accept_all=False, done=spent >= max_queries)
    finally:
        oracle.out[state.index] = state.best


def _start(threat: LpThreat, x: Tensor, y: Tensor, shape: torch.Size) -> _Active:
    n = x.shape[0]
    eps = threat.eps_for(x)
    lo = hi = x[:, :0]  # unused for L2: no channels, still one row per sample
    if threat.norm == "linf":
        flat, radius = x.view(-1, *shape[1:]), eps.view(-1, *[1] * (len(shape) - 1))
        lo = threat.project(flat - radius, flat).view_as(x)
        hi = threat.project(flat + radius, flat).view_as(x)
    margin = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    return _Active(torch.arange(n, device=x.device), x, y, eps, x.clone(), margin, lo, hi)


def _evaluate(oracle: _Oracle, state: _Active, cand: Tensor, accept_all: bool, done: bool) -> _Active:
    """One query per active sample: keep what improves the margin, retire samples adversarial or out of budget."""
    scores = oracle.scores(state.index, cand)
    values = margin(scores, state.y, oracle.targeted)
    hit = is_adversarial(scores, state.y, oracle.targeted)
    better = torch.ones_like(hit) if accept_all else hit | (values > state.margin)
    state.best = select_rows(better, cand, state.best)
    state.margin = torch.where(better, values, state.margin)
    stay = torch.zeros_like(hit) if done else ~hit
    if bool(stay.all()):
        return state
    oracle.out[state.index[~stay]] = state.best[~stay]
    return state.keep(stay)


def _project(threat: LpThreat, state: _Active, candidates: Tensor, shape: torch.Size) -> Tensor:
    """The threat's projection (ball, box, feature mask), done in the inputs' own shape."""
    original = state.x.view(-1, *shape[1:])
    return threat.select(state.index).project(candidates.view_as(original), original).view_as(candidates)


def _view(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _window_size(p: float, h: int, w: int, l2: bool) -> tuple[int, int]:
    area = p * h * w
    if min(h, w) == 1:
        side = max(round(area), 3 if l2 else 1)
        return 1, min(side, max(w - 1, 1) if not l2 else w)
    s = max(round(math.sqrt(area)), 1)
    if l2:
        s = max(s, 3)
        s = s + 1 if s % 2 == 0 else s
        s = min(s, h, w)
    else:
        s = min(s, h - 1, w - 1)
    return s, s


def _corners(a: int, sh: int, sw: int, h: int, w: int, gen: torch.Generator | None,
             device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample top-left corners of ``sh x sw`` windows, uniform over the positions inside the image."""
    top = torch.randint(0, h - sh + 1, (a, 1), generator=gen, device=device)
    left = torch.randint(0, w - sw + 1, (a, 1), generator=gen, device=device)
    return top, left


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


def _init_linf(state: _Active, gen: torch.Generator | None) -> Tensor:
    """Vertical stripes of width one, each +-eps per channel."""
    n, c, _, w = state.x.shape
    return torch.where(_coin((n, c, 1, w), gen, state.x.device), state.hi, state.lo)


def _propose_linf(state: _Active, p: float, gen: torch.Generator | None) -> Tensor:
    """One square window per sample set to ``x +- eps`` (a random sign per channel), the rest kept."""
    a, _, h, w = state.x.shape
    sh, sw = _window_size(p, h, w, l2=False)
    window = _window(a, sh, sw, h, w, gen, state.x.device)[2]
    up = _signs_that_change(state, window, gen)
    return torch.where(window, torch.where(up[:, :, None, None], state.hi, state.lo), state.best)


def _window(a: int, sh: int, sw: int, h: int, w: int, gen: torch.Generator | None,
            device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """One ``sh x sw`` window per sample at a uniformly drawn position.

    Returns each pixel's row and column offsets from the window's corner, ``(a, h)`` and ``(a, w)``, and the
    window as a boolean mask ``(a, 1, h, w)``.
    """
    top, left = _corners(a, sh, sw, h, w, gen, device)
    rows, cols = torch.arange(h, device=device) - top, torch.arange(w, device=device) - left
    mask = ((rows >= 0) & (rows < sh))[:, None, :, None] & ((cols >= 0) & (cols < sw))[:, None, None, :]
    return rows, cols, mask


def _signs_that_change(state: _Active, window: Tensor, gen: torch.Generator | None) -> Tensor:
    """Per-channel signs, ``(a, c)`` bool (True: +eps), redrawn when the window would stay as it is.

    A sign vector that leaves every pixel of the window unchanged wastes a query; like the authors' code we
    redraw it, here by drawing ``_REDRAWS`` vectors at once and taking each sample's first useful one (the
    same distribution as redrawing one at a time, capped). Whether a vector changes the window is decided
    per channel: channel ``k`` changes under ``+`` when some window pixel of ``best`` differs from ``hi``.
    """
    a, c = state.x.shape[:2]
    changes_up = ((state.hi != state.best) & window).flatten(2).any(2)
    changes_down = ((state.lo != state.best) & window).flatten(2).any(2)
    draws = _coin((_REDRAWS, a, c), gen, state.x.device)
    useful = torch.where(draws, changes_up, changes_down).any(2)
    first = useful.to(torch.uint8).argmax(0)
    return draws[first, torch.arange(a, device=draws.device)]


def _coin(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device, dtype=torch.uint8).bool()


def _rect_pattern(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Concentric rectangles with weights 1/(k+1)^2, unit norm (the paper's pseudo-Gaussian)."""
    out = torch.zeros(h, w, device=device, dtype=dtype)
    if h == 0 or w == 0:
        return out
    r, c = h // 2, w // 2
    for k in range(max(r, c) + 1):
        out[max(r - k, 0):min(r + k + 1, h), max(c - k, 0):min(c + k + 1, w)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


@functools.lru_cache(maxsize=64)
def _meta_pattern(h: int, w: int, flip: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Two pseudo-Gaussian halves of opposite sign; transposed when ``flip`` (square windows only).

    Cached: callers must not modify the returned tensor in place.
    """
    out = torch.cat([_rect_pattern(h // 2, w, device, dtype), -_rect_pattern(h - h // 2, w, device, dtype)])
    out = out / out.norm().clamp_min(1e-12)
    return out.t() if flip and h == w else out


def _init_l2(x: Tensor, eps: Tensor, gen: torch.Generator | None) -> Tensor:
    """A grid of meta-squares of side h // 5 with random signs per channel, scaled to norm eps."""
    n, c, h, w = x.shape
    sh, sw = max(h // 5, 1), max(w // 5, 1)
    delta = torch.zeros_like(x)
    pattern = _meta_pattern(sh, sw, False, x.device, x.dtype)
    for top in range((h - 5 * sh) // 2 if h >= 5 else 0, h, sh):
        for left in range((w - 5 * sw) // 2 if w >= 5 else 0, w, sw):
            part = pattern[: min(sh, h - top), : min(sw, w - left)]
            sign = _signs((n, c, 1, 1), gen, x)
            delta[:, :, top:top + part.shape[0], left:left + part.shape[1]] += part * sign
    return x + delta * _view(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))


def _propose_l2(state: _Active, p: float, gen: torch.Generator | None) -> Tensor:
    """Algorithm 3: the perturbation in a second window is moved into the first, which gets a new meta-square
    (random sign per channel) plus its old content, rescaled so the total stays at norm eps."""
    x, eps = state.x, state.eps
    a, c, h, w = x.shape
    sh, sw = _window_size(p, h, w, l2=True)
    pattern, in1 = _placed_pattern(a, sh, sw, h, w, gen, x)
    in2 = _window(a, sh, sw, h, w, gen, x.device)[2]
    delta = state.best - x
    old = delta * in1
    spare = (_view(eps) ** 2 - _view(delta.flatten(1).norm(dim=1)) ** 2).clamp_min(0) / c
    budget = (spare + _channel_norm(delta * (in1 | in2)) ** 2).sqrt()
    new = pattern * _signs((a, c, 1, 1), gen, x) + old / (_channel_norm(old) + 1e-10)
    new = new / _channel_norm(new).clamp_min(1e-12) * budget
    delta = torch.where(in1, new, delta.masked_fill(in2, 0.0))
    return x + delta * _view(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))


def _channel_norm(t: Tensor) -> Tensor:
    return t.flatten(2).norm(dim=2)[:, :, None, None]


def _placed_pattern(a: int, sh: int, sw: int, h: int, w: int, gen: torch.Generator | None,
                    like: Tensor) -> tuple[Tensor, Tensor]:
    """The meta-square of each sample (transposed for a random half of them) placed in its window.

    Returns the pattern image ``(a, 1, h, w)``, zero outside the window, and the window mask.
    """
    rows, cols, mask = _window(a, sh, sw, h, w, gen, like.device)
    patterns = _meta_patterns(sh, sw, like.device, like.dtype)
    which = torch.randint(0, 2, (a, 1, 1), generator=gen, device=like.device)
    placed = patterns[which, rows.clamp(0, sh - 1)[:, :, None], cols.clamp(0, sw - 1)[:, None, :]]
    return placed[:, None] * mask, mask


@functools.lru_cache(maxsize=64)
def _meta_patterns(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(2, h, w)``: the meta-square and its transpose (the same twice for non-square windows). Cached."""
    return torch.stack([_meta_pattern(h, w, False, device, dtype), _meta_pattern(h, w, True, device, dtype)])
