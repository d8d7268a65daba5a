"""Label-only active-learning extraction: ActiveThief (Pal, Gupta, Shukla, Kanade, Shevade & Ganapathy 2020,
"ActiveThief: Model Extraction Using Active Learning and Unannotated Public Data", AAAI).

The thief holds an unlabelled public pool (another domain). Round 0 asks a random part of the pool (the initial
seed, 10% of the budget); every later round trains the copy from scratch on the labels answered so far and asks the
pool points the copy is least sure of: largest entropy of its softmax (ActiveThief's uncertainty strategy), or
smallest margin between its two top classes, or greedy k-center in the copy's probability space (the core-set
strategy), or at random. The copy learns from the victim's top-1 labels only (probability answers are cut to their
argmax). ActiveThief's default: a 10% seed and the rest of the budget spread over 10 rounds.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.stealing.attacks._tools import draw, fit_on_labels, hard_labels, softmax_of
from bastion.stealing.base import ThiefView, register_steal_attack

Strategy = Literal["entropy", "margin", "k-center", "random"]
STRATEGIES = ("entropy", "margin", "k-center", "random")


@register_steal_attack("active-label", access="labels",
                       paper="Pal et al. 2020, ActiveThief (AAAI): uncertainty / k-center active learning on labels")
def active_label(view: ThiefView, *, strategy: Strategy = "entropy", rounds: int = 10,
                 seed_fraction: float = 0.1, batch_size: int = 500) -> None:
    """Pool-based active learning on the victim's labels.

    Args:
        strategy: how a round picks its pool points: "entropy" (default), "margin", "k-center" or "random".
        rounds: selection rounds after the initial seed (ActiveThief: 10).
        seed_fraction: the initial random seed's share of the budget (ActiveThief: 10%).
        batch_size: queries per request.
    """
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"active-label has no strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    view.propose(fit_on_labels(view))
    asked = torch.zeros(view.pool.shape[0], dtype=torch.bool)
    first = draw(view.pool.shape[0], max(1, math.ceil(seed_fraction * view.remaining)), view.generator)
    _ask(view, first, asked, batch_size)
    for r in range(rounds):
        per_round = math.ceil(view.remaining / (rounds - r))
        if per_round == 0 or bool(asked.all()):
            return
        copy = view.fit(*_labelled(view))
        _ask(view, select(copy, view, asked, per_round, strategy), asked, batch_size)


def _labelled(view: ThiefView) -> tuple[Tensor, Tensor]:
    x, answers = view.answered()
    return x, hard_labels(answers)


def _ask(view: ThiefView, idx: Tensor, asked: Tensor, batch_size: int) -> None:
    idx = idx[:view.remaining]
    for part in idx.split(batch_size):
        view.ask(view.pool[part.to(view.pool.device)])
    asked[idx] = True


def select(copy: torch.nn.Module, view: ThiefView, asked: Tensor, k: int, strategy: Strategy) -> Tensor:
    """``k`` pool indices not asked yet, by ``strategy`` on the copy's probabilities."""
    free = torch.nonzero(~asked).flatten()
    if strategy == "random":
        return free[draw(free.shape[0], k, view.generator)]
    probs = softmax_of(copy, view.pool).cpu()
    if strategy == "k-center":
        return k_center(probs, asked, k)
    top2 = probs[free].topk(min(2, probs.shape[1]), dim=1).values
    if strategy == "margin":
        score = -(top2[:, 0] - top2[:, -1])  # small margin first
    else:
        score = -(probs[free] * probs[free].clamp_min(1e-12).log()).sum(1)  # entropy
    return free[score.topk(min(k, free.shape[0])).indices]


def k_center(points: Tensor, centers: Tensor, k: int) -> Tensor:
    """Greedy k-center (Sener & Savarese 2018's core-set step): ``k`` indices of ``points`` not in ``centers``
    (a bool mask), each the point farthest from the centers chosen so far."""
    nearest = torch.full((points.shape[0],), float("inf"))
    for part in torch.nonzero(centers).flatten().split(1000):
        nearest = torch.minimum(nearest, torch.cdist(points, points[part]).min(1).values)
    nearest[centers] = -1.0
    chosen = []
    for _ in range(min(k, int((~centers).sum()))):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, (points - points[i]).norm(dim=1))
        nearest[i] = -1.0
    return torch.tensor(chosen, dtype=torch.long)
