"""Boundary attack: decision-based minimal-L2 attack by a random walk along the decision boundary, batched.

Brendel, Rauber & Bethge 2018, "Decision-Based Adversarial Attacks: Reliable Attacks Against Black-Box
Machine Learning Models", ICLR. From an adversarial start (uniform noise, then blended towards the input),
each step draws a Gaussian perturbation, makes it orthogonal to the direction to the original input and
of length ``spherical_step * dist``, projects the point back onto the sphere of radius ``dist`` around
the original (the orthogonal step), then moves it ``source_step * dist`` towards the original. The
candidate is kept if it is still adversarial. Both step sizes adapt to the success rates measured over
the last ``stats_every`` steps: the orthogonal step grows (by ``step_adaptation``) when more than half of
the spherical candidates are adversarial and shrinks below 20%; the step towards the original likewise
from the success rate of the full candidates (Section 3.2: "dynamic step-size adjustment").

Defaults: spherical and source steps 0.01, adaptation factor 1.5, statistics every 10 steps, as in the
paper and the authors' foolbox implementation; the paper runs up to hundreds of thousands of queries,
here ``max_queries = 10,000`` per sample by default (each step costs 2: the spherical candidate and the
full candidate are sent in one batch). A sample also stops when its source step falls below 1e-7.

Only labels are read. Returns the closest adversarial point found per sample (goal="minimal"), or the
input when no adversarial start was found.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.blackbox.decision import Decider, feature_mask, find_starts
from bastion.blackbox.target import partial_results
from bastion.threat import LpThreat, per_sample


@register_attack(
    "boundary",
    norms=("l2",),
    goal="minimal",
    access="decision",
    paper="Brendel, Rauber & Bethge 2018, Decision-Based Adversarial Attacks",
    randomized=True,
)
def boundary(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    max_queries: int = 10_000,
    spherical_step: float = 0.01,
    source_step: float = 0.01,
    step_adaptation: float = 1.5,
    stats_every: int = 10,
    init_tries: int = 100,
    starting_points: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boundary attack (L2). ``starting_points`` (adversarial inputs) skip the noise search."""
    if threat.norm != "l2":
        raise ValueError(f"boundary supports l2 only, not {threat.norm}")
    if max_queries < 1 or stats_every < 1 or step_adaptation <= 1:
        raise ValueError("max_queries and stats_every must be >= 1 and step_adaptation > 1")
    best = inputs.clone()
    decide = Decider(model, labels, targeted, max_queries)
    with partial_results(best):
        starts, found = find_starts(decide, inputs, threat, generator, tries=init_tries,
                                    starting_points=starting_points)
        best[found] = starts[found]
        _walk(decide, inputs, best, found, threat, generator, spherical_step, source_step,
              step_adaptation, stats_every)
    return best


def _walk(decide: Decider, x0: Tensor, current: Tensor, found: Tensor, threat: LpThreat,
          gen: torch.Generator | None, spherical_step: float, source_step: float, adaptation: float,
          stats_every: int) -> None:
    """The random walk; updates ``current`` (the best adversarial points) in place."""
    n = x0.shape[0]
    mask = feature_mask(threat, x0)
    sph = torch.full((n,), spherical_step, device=x0.device, dtype=x0.dtype)
    src = torch.full((n,), source_step, device=x0.device, dtype=x0.dtype)
    sph_hits = torch.zeros(n, device=x0.device)
    src_hits = torch.zeros(n, device=x0.device)
    rows = torch.arange(n, device=x0.device)[found]
    rows = rows[(current[rows] - x0[rows]).flatten(1).norm(dim=1) > 0]
    step = 0
    while True:
        rows = rows[decide.affordable(rows, 2) & (src[rows] > 1e-7)]
        if rows.numel() == 0:
            break
        spherical, candidate = _candidates(x0[rows], current[rows], sph[rows], src[rows], threat,
                                           None if mask is None else mask[rows], gen)
        a = rows.shape[0]
        adv = decide(torch.cat([spherical, candidate]), torch.cat([rows, rows]))
        sph_ok, cand_ok = adv[:a], adv[a:]
        closer = _dist(candidate, x0[rows]) < _dist(current[rows], x0[rows])
        accept = cand_ok & closer
        current[rows[accept]] = candidate[accept]
        sph_hits[rows] += sph_ok.float()
        src_hits[rows] += cand_ok.float()
        step += 1
        if step % stats_every == 0:  # all running samples share the step counter
            _adapt(sph, src, sph_hits[rows] / stats_every, src_hits[rows] / stats_every, rows, adaptation)
            sph_hits.zero_()
            src_hits.zero_()


def _dist(x: Tensor, x0: Tensor) -> Tensor:
    return (x - x0).flatten(1).norm(dim=1)


def _candidates(x0: Tensor, current: Tensor, sph: Tensor, src: Tensor, threat: LpThreat, mask: Tensor | None,
                gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The orthogonal (spherical) candidate and the full candidate one source step closer to ``x0``."""
    diff = x0 - current
    dist = diff.flatten(1).norm(dim=1).clamp_min(1e-12)
    eta = torch.randn(current.shape, generator=gen, device=current.device, dtype=current.dtype)
    if mask is not None:
        eta = eta * mask
    unit = diff / per_sample(dist, diff)
    eta = eta - unit * per_sample((eta * unit).flatten(1).sum(1), eta)  # orthogonal to the source direction
    eta = eta / per_sample(eta.flatten(1).norm(dim=1).clamp_min(1e-12), eta) * per_sample(sph * dist, eta)
    spherical = current + eta
    # Back onto the sphere of radius dist around x0.
    offset = spherical - x0
    spherical = x0 + offset * per_sample(dist / offset.flatten(1).norm(dim=1).clamp_min(1e-12), offset)
    candidate = x0 + (spherical - x0) * per_sample(1 - src, spherical)
    return threat.clip(spherical), threat.clip(candidate)


def _adapt(sph: Tensor, src: Tensor, sph_rate: Tensor, src_rate: Tensor, rows: Tensor, factor: float) -> None:
    """Brendel et al.'s step-size control from the success rates of the last statistics window."""
    up, down = sph_rate > 0.5, sph_rate < 0.2
    sph[rows[up]] *= factor
    src[rows[up]] *= factor
    sph[rows[down]] /= factor
    src[rows[down]] /= factor
    src[rows[src_rate > 0.5]] *= factor
    src[rows[src_rate < 0.2]] /= factor
