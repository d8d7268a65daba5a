"""MoEvA2: the multi-objective genetic attack for constrained feature spaces.

Simonetto, Dyrmishi, Ghamizi, Cordy & Le Traon 2022, "A Unified Framework for Adversarial Attack and Defense in
Constrained Feature Space", IJCAI (section 4.2). Each point gets its own population of candidate rows, evolved to
minimise three objectives at once:

- f1, misclassification: the model's probability of the true class (targeted: one minus that of the target);
- f2, distance: ``threat.distance`` (the threat's norm over the free features in the scaled space);
- f3, constraint violation: ``threat.penalty`` (the relations the repair could not satisfy).

The initial population is the clean input repeated (the paper's and the authors' code's initial state); offspring
come from two-point crossover (probability 0.9) and polynomial mutation (distribution index eta = 20, each free
feature with probability 1 / #free), integer features rounded, then the repair operator ``threat.project``; the
next population is chosen by non-dominated sorting.

Defaults follow the authors' code (tabularbench's Moeva2, used by CAA in Simonetto et al. 2024): 100 generations,
a population of 203 (the number of R-NSGA-III reference directions they draw), 100 offspring per generation.
Approximations: the survival is NSGA-II's (Deb et al. 2002: non-dominated rank, then crowding distance, normalised
over the merged population rather than per front) instead of R-NSGA-III's reference-direction niching (pymoo is not
a dependency); parents are picked by NSGA-II's binary tournament; mutation bounds are the ball's bounding box in
the box (an L2 ball is then enforced by the repair). Every candidate is repaired, so f2 never exceeds eps; the
returned row is, per point, the best candidate seen in any generation that ``threat.contains`` accepts (a valid
adversarial one first, then the lowest f1), else the first member of the final population.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, check_count, check_threat, free_mask, scale_of
from bastion.oracle import attribution

CROSSOVER_PROB = 0.9  # pymoo's two-point crossover default, as the authors use it
MUTATION_ETA = 20.0  # the authors' polynomial-mutation distribution index
PAPER = ("Simonetto et al. 2022, A Unified Framework for Adversarial Attack and Defense in Constrained Feature "
         "Space (IJCAI)")


@register_attack("moeva2", norms=("linf", "l2"), goal="budget", access="score", paper=PAPER, randomized=True,
                 threats=("tabular",))
def moeva2(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    generations: int = 100,
    population: int = 203,
    offspring: int = 100,
    crossover_prob: float = CROSSOVER_PROB,
    mutation_eta: float = MUTATION_ETA,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MoEvA2 with ``generations`` generations of ``offspring`` children per point (``offspring`` is rounded up to
    an even number). Costs ``1 + generations * offspring`` forward passes per point and no backward pass."""
    check_threat(threat, inputs, "moeva2")
    check_count("moeva2", generations=generations, population=population, offspring=offspring)
    return evolve(model, inputs, labels, threat, targeted=targeted, generations=generations, population=population,
                  offspring=offspring, crossover_prob=crossover_prob, mutation_eta=mutation_eta, generator=generator)


def evolve(model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, *, targeted: bool, generations: int,
           population: int, offspring: int, crossover_prob: float, mutation_eta: float,
           generator: torch.Generator | None, rows: Tensor | None = None) -> Tensor:
    """The search itself. ``rows``: the caller's sample index of each input row, for the pass counter (a combined
    attack that searches a subset of its batch passes the subset's indices)."""
    n, p, o = inputs.shape[0], population, offspring + offspring % 2
    rows = torch.arange(n) if rows is None else rows.cpu()
    search = _Search(model, inputs, labels, threat, targeted, generator)
    with attribution(model) as point:
        pop = threat.project(inputs.clone(), inputs)[:, None].expand(n, p, -1).contiguous()
        scores = search.evaluate(pop, lambda index: point(rows[index.cpu()]))
        rank, crowd = torch.zeros(n, p, device=inputs.device), torch.zeros(n, p, device=inputs.device)
        for _ in range(generations):
            parents = search.tournament(pop, rank, crowd, o)
            children = search.mutate(search.crossover(parents, crossover_prob), mutation_eta)
            fresh = search.evaluate(children, lambda index: point(rows[index.cpu()]))
            pop, scores = torch.cat([pop, children], 1), torch.cat([scores, fresh], 1)
            rank, crowd, keep = survive(scores, p)
            pop, scores = _take(pop, keep), _take(scores, keep)
    return search.best.result(pop[:, 0])


def _take(t: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` (N, K) of each point's population ``t`` (N, M, ...)."""
    return t.gather(1, index.view(*index.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))


class _Search:
    """The per-point genetic operators and the objective evaluation, over populations shaped (N, M, D)."""

    def __init__(self, model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, targeted: bool,
                 generator: torch.Generator | None) -> None:
        self.model, self.inputs, self.labels, self.threat = model, inputs, labels, threat
        self.targeted, self.gen = targeted, generator
        self.free = threat.free.to(inputs.device).nonzero().squeeze(1)
        self.integer = threat.integer.to(inputs.device)[self.free]
        eps = threat.eps_for(inputs).to(inputs.dtype)[:, None]
        reach = (eps * scale_of(threat, inputs))[:, self.free]
        lower = threat.lower.to(inputs.device, inputs.dtype)[self.free]
        upper = threat.upper.to(inputs.device, inputs.dtype)[self.free]
        x = inputs[:, self.free]
        self.lo, self.hi = torch.maximum(x - reach, lower), torch.minimum(x + reach, upper)  # (N, F)
        self.best = Best(inputs, labels, targeted)
        self.mask = free_mask(threat, inputs)

    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.gen, device=self.inputs.device, dtype=self.inputs.dtype)

    def evaluate(self, rows: Tensor, point: Callable[[Tensor], None]) -> Tensor:
        """Repairs ``rows`` (N, M, D) in place of the caller's copy, returns objectives (N, M, 3), and offers each
        point's best candidate to ``self.best``."""
        n, m, d = rows.shape
        index = torch.arange(n, device=rows.device).repeat_interleave(m)
        threat, inputs = self.threat.select(index), self.inputs[index]
        flat = threat.project(rows.reshape(n * m, d), inputs)
        rows.copy_(flat.view(n, m, d))
        point(index)
        with torch.no_grad():
            logits = self.model(flat)
        prob = logits.softmax(1).gather(1, self.labels[index, None]).squeeze(1)
        f1 = 1 - prob if self.targeted else prob
        scores = torch.stack([f1, threat.distance(flat, inputs), threat.penalty(flat)], 1).view(n, m, 3)
        valid = threat.contains(flat, inputs).view(n, m)
        adv = (logits.argmax(1) == self.labels[index]) if self.targeted else (logits.argmax(1) != self.labels[index])
        key = 4.0 * (valid & adv.view(n, m)) + 2.0 * valid - scores[..., 0]  # the candidate Best should see
        pick = key.argmax(1)
        chosen = rows[torch.arange(n), pick]
        self.best.update(chosen, logits.view(n, m, -1)[torch.arange(n), pick], -scores[torch.arange(n), pick, 0],
                         valid[torch.arange(n), pick])
        return scores

    def tournament(self, pop: Tensor, rank: Tensor, crowd: Tensor, count: int) -> Tensor:
        """NSGA-II's binary tournament: ``count`` parents per point (lower rank, then larger crowding, wins)."""
        n, p = rank.shape
        a = (self._rand(n, count) * p).long().clamp_max(p - 1)
        b = (self._rand(n, count) * p).long().clamp_max(p - 1)
        ra, rb, ca, cb = rank.gather(1, a), rank.gather(1, b), crowd.gather(1, a), crowd.gather(1, b)
        a_wins = (ra < rb) | ((ra == rb) & (ca >= cb))
        return _take(pop, torch.where(a_wins, a, b))

    def crossover(self, parents: Tensor, prob: float) -> Tensor:
        """Two-point crossover over the free features of consecutive parent pairs, each pair with ``prob``."""
        n, o, _ = parents.shape
        genes = parents[..., self.free].view(n, o // 2, 2, -1)
        f = genes.shape[-1]
        cuts = (self._rand(n, o // 2, 2) * (f + 1)).long().clamp_max(f).sort(-1).values
        pos = torch.arange(f, device=parents.device)
        swap = (pos >= cuts[..., :1]) & (pos < cuts[..., 1:]) & (self._rand(n, o // 2, 1) < prob)
        first = torch.where(swap, genes[:, :, 1], genes[:, :, 0])
        second = torch.where(swap, genes[:, :, 0], genes[:, :, 1])
        children = parents.clone()
        children[..., self.free] = torch.stack([first, second], 2).view(n, o, f)
        return children

    def mutate(self, rows: Tensor, eta: float) -> Tensor:
        """Deb's polynomial mutation of each free feature with probability 1 / #free, within [lo, hi]; integer
        features are rounded."""
        y = rows[..., self.free]
        lo, hi = self.lo[:, None], self.hi[:, None]
        span = (hi - lo).clamp_min(1e-12)
        u, hit = self._rand(*y.shape), self._rand(*y.shape) < 1.0 / y.shape[-1]
        power = 1.0 / (eta + 1.0)
        low_side = 2 * u + (1 - 2 * u) * (1 - (y - lo) / span).clamp(0, 1) ** (eta + 1)
        high_side = 2 * (1 - u) + 2 * (u - 0.5) * (1 - (hi - y) / span).clamp(0, 1) ** (eta + 1)
        delta = torch.where(u <= 0.5, low_side.clamp_min(0) ** power - 1, 1 - high_side.clamp_min(0) ** power)
        moved = torch.minimum(torch.maximum(y + delta * span, lo), hi)
        moved = torch.where(self.integer, moved.round(), moved)
        out = rows.clone()
        out[..., self.free] = torch.where(hit & (hi > lo), moved, y)
        return out


def survive(scores: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """NSGA-II survival per point: (rank, crowding, index) of the ``count`` kept of the (N, M, K) objective vectors
    (minimised), best first: lower non-dominated rank, then larger crowding distance."""
    rank = nondominated_rank(scores, count)
    crowd = crowding(scores, rank)
    by_crowd = (-crowd).argsort(dim=1, stable=True)
    order = by_crowd.gather(1, rank.gather(1, by_crowd).argsort(dim=1, stable=True))[:, :count]
    return rank.gather(1, order), crowd.gather(1, order), order


def nondominated_rank(scores: Tensor, enough: int) -> Tensor:
    """Pareto front index of every vector (0 = non-dominated), per point; peeling stops once ``enough`` vectors
    per point have a rank (the rest get one rank past the last peeled)."""
    first, second = scores[:, :, None, 0], scores[:, None, :, 0]
    le, lt = first <= second, first < second
    for k in range(1, scores.shape[2]):  # one (N, M, M) comparison per objective: no (N, M, M, K) tensor
        first, second = scores[:, :, None, k], scores[:, None, :, k]
        le &= first <= second
        lt |= first < second
    dominates = (le & lt).to(scores.dtype)  # [n, i, j]: i dominates j
    n, m, _ = scores.shape
    rank = torch.full((n, m), float(m), device=scores.device)
    left = torch.ones(n, m, dtype=torch.bool, device=scores.device)
    for r in range(m):
        beaten = torch.einsum("nij,ni->nj", dominates, left.to(scores.dtype)) > 0
        front = left & ~beaten
        rank[front] = r
        left &= ~front
        if not bool(left.any()) or bool(((~left).sum(1) >= enough).all()):
            rank[left] = r + 1
            break
    return rank


def crowding(scores: Tensor, rank: Tensor) -> Tensor:
    """NSGA-II's crowding distance within each front (inf at a front's ends), objectives normalised by their range
    over the whole merged population of the point."""
    n, m, k = scores.shape
    span = (scores.amax(1) - scores.amin(1)).clamp_min(1e-12)  # (N, K)
    total = torch.zeros(n, m, device=scores.device, dtype=scores.dtype)
    for obj in range(k):
        by_value = scores[..., obj].argsort(dim=1, stable=True)
        order = by_value.gather(1, rank.gather(1, by_value).argsort(dim=1, stable=True))
        r, v = rank.gather(1, order), scores[..., obj].gather(1, order) / span[:, obj:obj + 1]
        inf = torch.full((n, 1), float("inf"), device=scores.device, dtype=scores.dtype)
        gap = torch.cat([inf, v[:, 2:] - v[:, :-2], inf], 1)
        edge = torch.zeros_like(r[:, :1], dtype=torch.bool)
        same = torch.cat([edge, (r[:, 2:] == r[:, :-2]) & (r[:, 1:-1] == r[:, 2:]), edge], 1)
        total.scatter_add_(1, order, torch.where(same, gap, inf))
    return total
