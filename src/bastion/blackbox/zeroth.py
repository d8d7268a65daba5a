"""Projected zeroth-order ascent, shared by the NES, SPSA and ZOO attacks.

Each iteration evaluates the current point of every unbroken sample (1 query), stops the samples that
are adversarial or cannot afford another iteration, asks an *estimator* for a gradient from scores only
(``cost`` queries per sample) and takes a projected step (signed/normalized like PGD, or Adam).
Per-sample early stopping and best-so-far (highest loss) as in ``bastion.attacks.pgd``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.attacks.losses import LOSSES, is_adversarial
from bastion.attacks.steps import lp_step
from bastion.blackbox.target import partial_results, query_scores
from bastion.oracle import attribute
from bastion.threat import LpThreat

# f(queries, owner) -> loss per query; owner[i] is the position in the estimator's batch of query i's sample.
LossOracle = Callable[[Tensor, Tensor], Tensor]
# estimate(f, x, generator) -> (gradient estimate like x, mask of the coordinates it covers or None).
Estimator = Callable[[LossOracle, Tensor, "torch.Generator | None"], tuple[Tensor, Tensor | None]]
Stepper = Callable[[Tensor, Tensor | None, Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor, bool], Tensor]


def sign_step(step_size: Tensor, threat: LpThreat) -> Stepper:
    """PGD's steepest-ascent step of per-sample length ``step_size`` (signed for L-inf, normalized for L2)."""

    def step(grad: Tensor, mask: Tensor | None, rows: Tensor) -> Tensor:
        return lp_step(grad, step_size[rows], threat.norm)

    return step


def adam_step(like: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8) -> Stepper:
    """Adam on the perturbation (Kingma & Ba 2015), per coordinate; only coordinates in ``mask`` move."""
    m = torch.zeros_like(like)
    v = torch.zeros_like(like)
    t = torch.zeros_like(like)
    b1, b2 = betas

    def step(grad: Tensor, mask: Tensor | None, rows: Tensor) -> Tensor:
        on = torch.ones_like(grad, dtype=torch.bool) if mask is None else mask
        t[rows] = t[rows] + on.to(t.dtype)
        m[rows] = torch.where(on, b1 * m[rows] + (1 - b1) * grad, m[rows])
        v[rows] = torch.where(on, b2 * v[rows] + (1 - b2) * grad * grad, v[rows])
        tt = t[rows].clamp_min(1)
        m_hat = m[rows] / (1 - b1 ** tt)
        v_hat = v[rows] / (1 - b2 ** tt)
        return torch.where(on, lr * m_hat / (v_hat.sqrt() + eps), torch.zeros_like(grad))

    return step


def projected_ascent(
    model: nn.Module, inputs: Tensor, labels: Tensor, threat: LpThreat, *, targeted: bool, loss: str | LossFn,
    max_queries: int, cost: int, estimate: Estimator, step: Stepper, generator: torch.Generator | None,
) -> Tensor:
    """Run the loop; returns the first adversarial iterate per sample, else the highest-loss one."""
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)} or a function, not {loss!r}")
    if max_queries < 1:
        raise ValueError("max_queries must be at least 1")
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
    n = inputs.shape[0]
    x_adv = inputs.clone()
    best = inputs.clone()
    best_loss = torch.full((n,), float("-inf"), device=inputs.device)
    spent = torch.zeros(n, dtype=torch.long, device=inputs.device)
    active = torch.arange(n, device=inputs.device)
    with partial_results(best):
        while active.numel():
            with attribute(model, active):
                scores = query_scores(model, x_adv[active])
            spent[active] += 1
            values = loss_fn(scores, labels[active], targeted)
            hit = is_adversarial(scores, labels[active], targeted)
            better = (values > best_loss[active]) | hit
            best[active[better]] = x_adv[active[better]]
            best_loss[active[better]] = values[better]
            active = active[~hit & (spent[active] + cost + 1 <= max_queries)]
            if active.numel() == 0:
                break
            f = _loss_oracle(model, labels, active, loss_fn, targeted)
            x = x_adv[active]
            grad, mask = estimate(f, x, generator)
            spent[active] += cost
            moved = x + step(grad, mask, active)
            x_adv[active] = threat.select(active).project(moved, inputs[active])
    return best


def _loss_oracle(model: nn.Module, labels: Tensor, active: Tensor, loss_fn: LossFn,
                 targeted: bool) -> LossOracle:
    def f(queries: Tensor, owner: Tensor) -> Tensor:
        rows = active[owner]
        with attribute(model, rows):
            scores = query_scores(model, queries)
        return loss_fn(scores, labels[rows], targeted)

    return f


def view_as_batch(v: Tensor, like: Tensor) -> Tensor:
    """Reshape an ``(A, k)`` tensor to broadcast against ``(A, k, *sample_shape)``."""
    return v.view(*v.shape, *([1] * (like.dim() - v.dim())))
