"""Constrained PGD (CPGD) for tabular data with feature constraints.

Simonetto, Dyrmishi, Ghamizi, Cordy & Le Traon 2022, "A Unified Framework for Adversarial Attack and Defense in
Constrained Feature Space", IJCAI (section 4.1, "C-PGD"): PGD that ascends the classification loss minus the
constraint violation, ``CE(h(x), y) - sum_i penalty_i(x)`` (unit weight, as in the paper), so the gradient itself
steers away from infeasible regions; equality relations hold by construction (derived features are recomputed from
the free ones, and the gradient flows through that computation).

Defaults are those of the authors' own CPGD in their 2024 benchmark code (tabularbench, the CPGD baseline of
Simonetto et al. 2024): 10 steps of a fixed size 0.4 * eps, from a uniform random start in the ball. The 2022
code ran ART's PGD (eps_step = eps / 3) and repaired feature types only at the end; here every iterate goes through
``threat.project`` (the repair operator: immutables, ball, box, integers, inequality clamps, then ``complete``),
as the 2024 version does for equalities, so every returned row satisfies what the repair can enforce, and the row
returned is the best one that ``threat.contains`` accepts (an approximation of the paper's "return the last
iterate": a later iterate that the repair could not make valid never replaces an earlier valid one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, ascent, check_count, check_threat, objective
from bastion.oracle import attribution

PAPER = ("Simonetto et al. 2022, A Unified Framework for Adversarial Attack and Defense in Constrained Feature "
         "Space (IJCAI)")


@register_attack("cpgd", norms=("linf", "l2"), goal="budget", paper=PAPER, randomized=True, threats=("tabular",))
def cpgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    steps: int = 10,
    step_factor: float = 0.4,
    random_init: bool = True,
    constraint_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CPGD: ``steps`` steps of ``step_factor * eps`` (scaled units) on ``CE - constraint_weight * penalty``.

    Costs at most ``steps + 1`` forward and backward passes per point (the last pass checks the last iterate).
    Returns the best valid candidate per point (adversarial first, then highest loss), else the projected last
    iterate.
    """
    check_threat(threat, inputs, "cpgd")
    check_count("cpgd", steps=steps)
    step = step_factor * threat.eps_for(inputs).to(inputs.dtype)
    x = threat.random_start(inputs, generator) if random_init else threat.project(inputs.clone(), inputs)
    best = Best(inputs, labels, targeted)
    with attribution(model) as point:
        point(torch.arange(inputs.shape[0]))
        for t in range(steps + 1):
            _, ce, grad, logits = objective(model, x, labels, threat, targeted=targeted, weight=constraint_weight)
            best.update(x, logits, ce, threat.contains(x, inputs))
            if t == steps or bool(best.adv.all()):
                break
            x = threat.project(ascent(x, grad, step, threat), inputs)
    return best.result(x)
