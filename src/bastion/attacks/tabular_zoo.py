"""ZOO inside a tabular threat with feature constraints: score-based, coordinate-wise, with Adam.

Chen, Zhang, Sharma, Yi & Hsieh 2017, "ZOO: Zeroth Order Optimization based Black-box Attacks to Deep Neural
Networks without Training Substitute Models", AISec. Each iteration picks ``coordinates`` random *free* features
per point, estimates each partial derivative of the loss with the symmetric difference
``(f(x + h e_i) - f(x - h e_i)) / (2h)`` (eq. 6) and moves those coordinates with Adam (ZOO-ADAM, Algorithm 2:
first and second moments and a step count per coordinate). The loss is ZOO's margin on log-probabilities
(``bastion.attacks.zoo.log_prob_margin``, eq. 4 and 5), ascended inside the threat (as bastion's Lp ``zoo``)
instead of the paper's C&W objective with a penalty constant.

Carried into the constrained space: the coordinates, ``h`` and the Adam steps are in the threat's scaled space
(feature ``j`` in units of ``threat.scale[j]``), so h = 1e-4 is relative to each feature's range; the model is
queried on ``threat.complete`` of each point (derived features recomputed); the optimised iterate stays
real-valued (``constrained.relax``: ball, box, immutables) and every iteration's candidate is
``threat.project`` of it (integers rounded, relations repaired), queried once and offered to the tracker of the
best *valid* candidate (``constrained.Best``). A point stops once it has a valid adversarial candidate.

Defaults from the paper: 128 coordinates per iteration, h = 1e-4, Adam learning rate 0.01, beta1 = 0.9,
beta2 = 0.999; 1,000 iterations as bastion's ``zoo``. Costs ``2 * coordinates + 1`` queries per iteration and
never more than ``max_queries`` per point (default: what ``steps`` iterations cost, plus one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, check_count, check_threat, relax, scale_of
from bastion.attacks.zoo import log_prob_margin
from bastion.blackbox.target import partial_results, query_scores
from bastion.blackbox.zeroth import adam_step
from bastion.errors import InvalidInputError
from bastion.oracle import attribute

PAPER = ("Chen et al. 2017, ZOO: Zeroth Order Optimization based Black-box Attacks to Deep Neural Networks "
         "without Training Substitute Models (AISec)")


@register_attack("tabular-zoo", norms=("linf", "l2"), goal="budget", access="score", paper=PAPER, randomized=True,
                 threats=("tabular",))
def tabular_zoo(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    steps: int = 1000,
    coordinates: int = 128,
    h: float = 1e-4,
    lr: float = 0.01,
    max_queries: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ZOO-ADAM on the free features. Returns per point the best valid candidate (adversarial first, then the
    highest loss); the repaired clean input where none was valid."""
    check_threat(threat, inputs, "tabular-zoo")
    check_count("tabular-zoo", steps=steps, coordinates=coordinates, max_queries=max_queries or 1)
    if h <= 0:
        raise InvalidInputError(f"tabular-zoo: h must be positive; got {h}.")
    free = threat.free.to(inputs.device).nonzero().squeeze(1)
    k = min(coordinates, free.numel())
    best = Best(inputs, labels, targeted)
    fallback = threat.project(inputs.clone(), inputs)
    if k == 0:
        return fallback
    budget = max_queries if max_queries is not None else steps * (2 * k + 1) + 1
    z = inputs.clone()  # the real-valued iterate
    adam = adam_step(z[:, free], lr)
    spent = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
    active = torch.arange(inputs.shape[0], device=inputs.device)
    with partial_results(best.x):
        for it in range(steps + 1):
            _offer(model, z, inputs, labels, threat, best, active, targeted)
            spent[active] += 1
            active = active[~best.adv[active] & (spent[active] + 2 * k + 1 <= budget)]
            if active.numel() == 0 or it == steps:
                break
            grad, mask = _estimate(model, z[active], labels[active], threat, free, k, h, active, targeted,
                                   generator)
            spent[active] += 2 * k
            move = torch.zeros_like(z[active])
            move[:, free] = adam(grad, mask, active)
            sub = threat.select(active)
            z[active] = relax(sub, z[active] + move * scale_of(threat, z), inputs[active]).detach()
    return best.result(fallback)


def _offer(model: nn.Module, z: Tensor, inputs: Tensor, labels: Tensor, threat: Threat, best: Best, rows: Tensor,
           targeted: bool) -> None:
    """Repair the iterates of ``rows``, query them once, and offer them to ``best``."""
    sub = threat.select(rows)
    cand = sub.project(z[rows], inputs[rows])
    with attribute(model, rows):
        scores = query_scores(model, cand)
    best.update(cand, scores, log_prob_margin(scores, labels[rows], targeted), sub.contains(cand, inputs[rows]), rows)


def _estimate(model: nn.Module, z: Tensor, labels: Tensor, threat: Threat, free: Tensor, k: int, h: float,
              rows: Tensor, targeted: bool, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Symmetric differences along ``k`` random free features per point (scaled units): the partial derivatives
    (A, F) over the free features, zero off the chosen ones, and the mask of the chosen ones."""
    a, f = z.shape[0], free.numel()
    chosen = torch.rand((a, f), generator=generator, device=z.device).topk(k, dim=1).indices  # k distinct
    basis = torch.zeros((a, k, z.shape[1]), device=z.device, dtype=z.dtype)
    basis.scatter_(2, free[chosen][:, :, None], 1.0)
    basis = basis * h * scale_of(threat, z)[:, None]
    queries = torch.cat([z[:, None] + basis, z[:, None] - basis], 1).reshape(a * 2 * k, -1)
    owner = torch.arange(a, device=z.device).repeat_interleave(2 * k)
    with attribute(model, rows[owner]):
        scores = query_scores(model, threat.complete(queries))
    values = log_prob_margin(scores, labels[owner], targeted).view(a, 2, k)
    partial = (values[:, 0] - values[:, 1]) / (2 * h)
    grad = torch.zeros((a, f), device=z.device, dtype=z.dtype).scatter_(1, chosen, partial.to(z.dtype))
    mask = torch.zeros((a, f), device=z.device, dtype=torch.bool).scatter_(1, chosen, True)
    return grad, mask
