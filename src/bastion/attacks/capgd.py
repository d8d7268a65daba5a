"""Constrained Adaptive PGD (CAPGD) for tabular data with feature constraints.

Simonetto, Ghamizi & Cordy 2024, "Constrained Adaptive Attack: Effective Adversarial Attack Against Deep Neural
Networks for Tabular Data", NeurIPS (section 3, CAPGD). APGD (Croce & Hein 2020) carried into a constrained
feature space:

- the loss is the constrained loss of Simonetto et al. 2022, ``CE(h(x), y) - penalty(x)`` (unit weight);
- every iterate, including the momentum point, goes through the repair operator R_Omega (here
  ``threat.project``: immutables, ball, box, integers, inequality clamps, derived features recomputed);
- APGD's step-size schedule: the step starts at 2 * eps and is halved at the checkpoints
  w_j = ceil(p_j * steps) (``bastion.attacks.apgd.checkpoints``) where the loss rose in fewer than rho = 0.75 of
  the steps since the last checkpoint, or the best loss did not improve and the step was not reduced last time;
  the iterate then restarts from the best point;
- momentum alpha = 0.75 (the first step without);
- the first run starts from the clean input (the paper's "initial state": a random start may land where the
  repair cannot reach a valid point); further restarts start from a uniform draw in the ball.

Defaults follow the paper's evaluation and the authors' code (tabularbench): 10 steps, 1 restart (CAA runs it with
2, see ``bastion.attacks.caa``). Where the paper returns the last adversarial iterate this returns, per point, the
best candidate ``threat.contains`` accepts (adversarial first, then highest loss), else the projected last iterate.
Scaled space: eps and the step are in units of ``threat.scale``; steps are sign (L-inf) or normalised (L2)
gradients of the free features there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.apgd import checkpoints
from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, ascent, check_count, check_threat, objective
from bastion.oracle import attribution

PAPER = ("Simonetto et al. 2024, Constrained Adaptive Attack: Effective Adversarial Attack Against Deep Neural "
         "Networks for Tabular Data (NeurIPS)")


@register_attack("capgd", norms=("linf", "l2"), goal="budget", paper=PAPER, randomized=True, threats=("tabular",))
def capgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    steps: int = 10,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    step_factor: float = 2.0,
    constraint_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CAPGD with ``restarts`` runs of ``steps`` steps; restarts run only on points without a valid adversarial
    example yet. Costs at most ``restarts * (steps + 1)`` forward and backward passes per point."""
    check_threat(threat, inputs, "capgd")
    check_count("capgd", steps=steps, restarts=restarts)
    best = Best(inputs, labels, targeted)
    last = threat.project(inputs.clone(), inputs)
    remaining = torch.arange(inputs.shape[0], device=inputs.device)
    with attribution(model) as point:
        for restart in range(restarts):
            if remaining.numel() == 0:
                break
            point(remaining.cpu())
            sub, x0 = threat.select(remaining), inputs[remaining]
            start = sub.project(x0.clone(), x0) if restart == 0 else sub.random_start(x0, generator)
            end = _run(model, x0, labels[remaining], sub, start, best, remaining, steps=steps, rho=rho,
                       momentum=momentum, step_factor=step_factor, weight=constraint_weight, targeted=targeted)
            if restart == 0:
                last = end
            remaining = remaining[~best.adv[remaining]]
    return best.result(last)


def _run(model: nn.Module, x0: Tensor, y: Tensor, threat: Threat, start: Tensor, best: Best, rows: Tensor, *,
         steps: int, rho: float, momentum: float, step_factor: float, weight: float, targeted: bool) -> Tensor:
    """One CAPGD run on the points ``rows`` (``x0`` their inputs, ``threat`` selected to them); offers every
    iterate to ``best`` and returns the last iterate."""
    marks, last_mark = checkpoints(steps), 0
    step = step_factor * threat.eps_for(x0).to(x0.dtype)

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        f, ce, grad, logits = objective(model, x, y, threat, targeted=targeted, weight=weight)
        best.update(x, logits, ce, threat.contains(x, x0), rows)
        return f, grad

    x = x_prev = start
    f_cur, grad = evaluate(x)
    x_best, g_best, f_best, f_best_last = x.clone(), grad.clone(), f_cur.clone(), f_cur.clone()
    rises = torch.zeros_like(f_cur)
    reduced_last = torch.zeros_like(f_cur, dtype=torch.bool)
    for k in range(1, steps + 1):
        z = threat.project(ascent(x, grad, step, threat), x0)
        if k > 1:  # x + a (z - x) + (1 - a)(x - x_prev), repaired again
            z = threat.project(x + momentum * (z - x) + (1 - momentum) * (x - x_prev), x0)
        x_prev, x = x, z
        f, grad = evaluate(x)
        rises += (f > f_cur).to(rises.dtype)
        f_cur, better = f, f > f_best
        x_best, g_best = torch.where(better[:, None], x, x_best), torch.where(better[:, None], grad, g_best)
        f_best = torch.where(better, f, f_best)
        if bool(best.adv[rows].all()):
            break
        if k in marks and k < steps:
            reduce = (rises < rho * (k - last_mark)) | (~reduced_last & (f_best <= f_best_last))
            step = torch.where(reduce, step / 2, step)
            x = torch.where(reduce[:, None], x_best, x)
            grad = torch.where(reduce[:, None], g_best, grad)
            f_cur = torch.where(reduce, f_best, f_cur)
            rises, reduced_last, f_best_last, last_mark = torch.zeros_like(rises), reduce, f_best.clone(), k
    return x
