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
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import is_adversarial, margin
from bastion.blackbox.target import partial_results, query_scores
from bastion.oracle import attribute
from bastion.threat import LpThreat

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


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
        _search(model, x, labels, threat, best, inputs.shape, targeted, max_queries, p_init, generator)
    return best.view_as(inputs)


def _search(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, best: Tensor, shape: torch.Size,
            targeted: bool, max_queries: int, p_init: float, gen: torch.Generator | None) -> None:
    n = x.shape[0]
    eps = threat.eps_for(x)
    best_margin = torch.full((n,), float("-inf"), device=x.device)
    spent = torch.zeros(n, dtype=torch.long, device=x.device)
    active = torch.arange(n, device=x.device)

    def evaluate(candidates: Tensor, accept_all: bool) -> None:
        nonlocal active
        with attribute(model, active):
            scores = query_scores(model, candidates.view(-1, *shape[1:]))
        spent[active] += 1
        values = margin(scores, y[active], targeted)
        hit = is_adversarial(scores, y[active], targeted)
        better = hit | (values > best_margin[active]) | accept_all
        best[active[better]] = candidates[better]
        best_margin[active[better]] = values[better]
        active = active[~hit & (spent[active] < max_queries)]

    evaluate(x.clone(), accept_all=True)
    if active.numel():
        init = _init_linf if threat.norm == "linf" else _init_l2
        evaluate(_project(threat, active, init(x[active], eps[active], gen), x, shape), accept_all=False)
    it = 1
    while active.numel():
        p = p_selection(p_init, it, max_queries)
        propose = _propose_linf if threat.norm == "linf" else _propose_l2
        candidates = propose(x[active], best[active], eps[active], p, (threat.lower, threat.upper), gen)
        evaluate(_project(threat, active, candidates, x, shape), accept_all=False)
        it += 1


def _project(threat: LpThreat, active: Tensor, candidates: Tensor, x: Tensor, shape: torch.Size) -> Tensor:
    """The threat's projection (ball, box, feature mask), done in the inputs' own shape."""
    original = x[active].view(-1, *shape[1:])
    return threat.select(active).project(candidates.view_as(original), original).view_as(candidates)


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


def _windows(a: int, sh: int, sw: int, h: int, w: int, gen: torch.Generator | None,
             device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample window positions as row and column index tensors, ``(a, sh)`` and ``(a, sw)``."""
    top = torch.randint(0, h - sh + 1, (a,), generator=gen, device=device)
    left = torch.randint(0, w - sw + 1, (a,), generator=gen, device=device)
    return top[:, None] + torch.arange(sh, device=device), left[:, None] + torch.arange(sw, device=device)


def _get(t: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    n = torch.arange(t.shape[0], device=t.device)[:, None, None]
    return t[n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _put(t: Tensor, rows: Tensor, cols: Tensor, patch: Tensor) -> None:
    n = torch.arange(t.shape[0], device=t.device)[:, None, None]
    t[n, :, rows[:, :, None], cols[:, None, :]] = patch.permute(0, 2, 3, 1)


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


def _init_linf(x: Tensor, eps: Tensor, gen: torch.Generator | None) -> Tensor:
    """Vertical stripes of width one, each +-eps per channel."""
    n, c, _, w = x.shape
    return x + _view(eps) * _signs((n, c, 1, w), gen, x)


def _propose_linf(x: Tensor, x_best: Tensor, eps: Tensor, p: float, box: tuple[float, float],
                  gen: torch.Generator | None) -> Tensor:
    a, c, h, w = x.shape
    sh, sw = _window_size(p, h, w, l2=False)
    rows, cols = _windows(a, sh, sw, h, w, gen, x.device)
    delta = x_best - x
    current = _get(x_best, rows, cols)
    x_win = _get(x, rows, cols)
    new = _view(eps) * _signs((a, c, 1, 1), gen, x)
    for _ in range(10):  # redraw signs that would leave the window unchanged (a wasted query)
        same = ((x_win + new).clamp(*box) - current).abs().flatten(1).amax(1) < 1e-7
        if not same.any():
            break
        new[same] = _view(eps[same]) * _signs((int(same.sum()), c, 1, 1), gen, x)
    _put(delta, rows, cols, new.expand(a, c, sh, sw))
    return x + delta


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


def _propose_l2(x: Tensor, x_best: Tensor, eps: Tensor, p: float, box: tuple[float, float],
                gen: torch.Generator | None) -> Tensor:
    a, c, h, w = x.shape
    sh, sw = _window_size(p, h, w, l2=True)
    rows1, cols1 = _windows(a, sh, sw, h, w, gen, x.device)
    rows2, cols2 = _windows(a, sh, sw, h, w, gen, x.device)
    delta = x_best - x
    in1 = torch.zeros((a, 1, h, w), dtype=torch.bool, device=x.device)
    in2 = torch.zeros_like(in1)
    _put(in1, rows1, cols1, torch.ones((a, 1, sh, sw), dtype=torch.bool, device=x.device))
    _put(in2, rows2, cols2, torch.ones((a, 1, sh, sw), dtype=torch.bool, device=x.device))
    norm_window1 = _get(delta, rows1, cols1).flatten(2).norm(dim=2)[:, :, None, None]
    norm_image = _view(delta.flatten(1).norm(dim=1))
    norm_union = (delta * (in1 | in2)).flatten(2).norm(dim=2)[:, :, None, None]
    flip = bool(torch.rand((), generator=gen, device=x.device) > 0.5)
    new = _meta_pattern(sh, sw, flip, x.device, x.dtype) * _signs((a, c, 1, 1), gen, x)
    new = new + _get(delta, rows1, cols1) / (norm_window1 + 1e-10)
    budget = ((_view(eps) ** 2 - norm_image ** 2).clamp_min(0) / c + norm_union ** 2).sqrt()
    new = new / new.flatten(2).norm(dim=2)[:, :, None, None].clamp_min(1e-12) * budget
    delta = delta.masked_fill(in2, 0.0)
    _put(delta, rows1, cols1, new)
    return x + delta * _view(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))
