"""Query-efficiency metrics of black-box attacks: success rate and robust accuracy against queries spent.

Square Attack, NES and the other score-based attacks here stop each sample at its first adversarial
query, so the target's per-sample count at the end of a run *is* the number of queries to success for
the samples that were broken. ``queries_to_success(counts, success)`` turns counts and the runner's
success mask into that vector (``inf`` where the attack failed); ``query_curve`` summarizes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class QueryCurve:
    """Success rate and robust accuracy after ``queries[i]`` queries per sample.

    ``success_rate[i]``: fraction of samples broken within ``queries[i]`` queries (among all samples
    given); ``robust_accuracy[i] = 1 - success_rate[i]`` when every sample started correctly classified
    (samples already misclassified count as broken at 0 queries). ``median_queries`` and
    ``mean_queries`` are over the broken samples only (NaN when none), the statistic black-box papers
    report next to the success rate.
    """

    queries: Tensor
    success_rate: Tensor
    robust_accuracy: Tensor
    median_queries: float
    mean_queries: float
    budget: int

    @property
    def final_success_rate(self) -> float:
        return float(self.success_rate[-1])


def queries_to_success(counts: Tensor, success: Tensor, *, clean_correct: Tensor | None = None) -> Tensor:
    """Per-sample queries until success: ``counts`` where ``success``, ``inf`` elsewhere, 0 where the
    clean input was already misclassified (``clean_correct`` false)."""
    out = torch.where(success.cpu(), counts.cpu().double(), torch.full(counts.shape, float("inf"),
                                                                          dtype=torch.float64))
    if clean_correct is not None:
        out = torch.where(clean_correct.cpu(), out, torch.zeros_like(out))
    return out


def query_curve(success_queries: Tensor, budget: int, *, points: int = 100) -> QueryCurve:
    """The curve at ``points`` budgets from 0 to ``budget`` (evenly spaced; always including both ends).

    Args:
        success_queries: ``(N,)`` queries each sample needed (``inf`` or NaN where never broken, 0 for
            samples misclassified before the attack), e.g. from ``queries_to_success``.
        budget: the largest number of queries per sample on the curve.
    """
    if budget < 0 or points < 2:
        raise ValueError("budget must be >= 0 and points >= 2")
    q = success_queries.detach().double().cpu().flatten()
    q = torch.where(torch.isnan(q), torch.full_like(q, float("inf")), q)
    grid = torch.linspace(0, budget, points, dtype=torch.float64).round().unique()
    n = max(q.numel(), 1)
    rate = (q[None, :] <= grid[:, None]).sum(1).double() / n
    broken = q[torch.isfinite(q) & (q <= budget)]
    median = float(broken.median()) if broken.numel() else float("nan")
    mean = float(broken.mean()) if broken.numel() else float("nan")
    return QueryCurve(grid.long(), rate, 1 - rate, median, mean, budget)
