"""Constrained Adaptive Attack (CAA): CAPGD, then MoEvA2 on the points CAPGD did not break.

Simonetto, Ghamizi & Cordy 2024, "Constrained Adaptive Attack: Effective Adversarial Attack Against Deep Neural
Networks for Tabular Data", NeurIPS (section 4). The cheap gradient attack runs first on every point; only points
for which it found no valid adversarial example go on to the expensive search attack, which also covers what the
gradient misses (non-differentiable models, constraints the gradient cannot follow). A point counts as broken when
its CAPGD row is classified wrongly (the target class, if targeted) and ``threat.contains`` accepts it.

Defaults are those of the paper and its code (tabularbench's ConstrainedAutoAttack, "standard" version): CAPGD with
10 steps and 2 restarts, then MoEvA2 with 100 generations and 100 offspring (population 203). The paper's CAPGD
inside CAA does not restart from the best point at checkpoints (``best_restart=False`` in their code); here CAPGD
keeps APGD's restart (see ``bastion.attacks.capgd``), an approximation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.capgd import capgd
from bastion.attacks.constrained import Threat, check_count, check_threat
from bastion.attacks.losses import is_adversarial
from bastion.attacks.moeva2 import CROSSOVER_PROB, MUTATION_ETA, evolve
from bastion.oracle import attribute

PAPER = ("Simonetto et al. 2024, Constrained Adaptive Attack: Effective Adversarial Attack Against Deep Neural "
         "Networks for Tabular Data (NeurIPS)")


@register_attack("caa", norms=("linf", "l2"), goal="budget", paper=PAPER, randomized=True, threats=("tabular",))
def caa(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    steps: int = 10,
    restarts: int = 2,
    generations: int = 100,
    population: int = 203,
    offspring: int = 100,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CAA. Costs CAPGD's passes on every point plus MoEvA2's on the points CAPGD left unbroken."""
    check_threat(threat, inputs, "caa")
    check_count("caa", steps=steps, restarts=restarts, generations=generations, population=population,
                offspring=offspring)
    adv = capgd(model, inputs, labels, threat, targeted=targeted, steps=steps, restarts=restarts,
                generator=generator)
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    valid, broken = _judge(model, adv, inputs, labels, threat, targeted, rows)
    left = rows[~broken]
    if left.numel() == 0:
        return adv
    sub = threat.select(left)
    searched = evolve(model, inputs[left], labels[left], sub, targeted=targeted, generations=generations,
                      population=population, offspring=offspring, crossover_prob=CROSSOVER_PROB,
                      mutation_eta=MUTATION_ETA, generator=generator, rows=left)
    _, found = _judge(model, searched, inputs[left], labels[left], sub, targeted, left)
    take = found | ~valid[left]  # MoEvA2's row where it broke the point, or where CAPGD's row is not valid
    out = adv.clone()
    out[left[take]] = searched[take]
    return out


def _judge(model: nn.Module, adv: Tensor, inputs: Tensor, labels: Tensor, threat: Threat, targeted: bool,
           rows: Tensor) -> tuple[Tensor, Tensor]:
    """(valid, valid and adversarial) per row, one forward pass."""
    valid = threat.contains(adv, inputs)
    with attribute(model, rows.cpu()), torch.no_grad():
        return valid, valid & is_adversarial(model(adv), labels, targeted)
