"""Equation-solving extraction of a multinomial logistic model (Tramèr, Zhang, Juels, Reiter & Ristenpart 2016,
"Stealing Machine Learning Models via Prediction APIs", USENIX Security, Sec. 4.1).

A multinomial logistic model answers ``p = softmax(W x + b)``, so every answer gives ``C - 1`` equations linear in
the unknowns: ``log p_i - log p_0 = (w_i - w_0) . x + (b_i - b_0)``. With ``d + 1`` queries in general position
(``d`` input features) the system has one solution; the weights are known up to the softmax's shift (adding one
vector to every row changes nothing), so class 0's row is set to zero. The attack asks uniformly random inputs
within the bounds and proposes the least-squares solution (the minimum-norm one while under-determined) as the copy,
a ``Flatten``-``Linear`` module; on a linear victim it is exact, on another model it is the best linear fit of the
log-odds.

Label answers carry no equations: then the attack spends the whole budget on uniform random queries and the copy
is the thief's recipe trained on their labels (Tramèr et al.'s retraining baseline with uniform queries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bastion.stealing.base import ThiefView, VictimSpec, register_steal_attack


@register_steal_attack("equation-solving", access="probs",
                       paper="Tramèr et al. 2016, Stealing ML Models via Prediction APIs (equation-solving)")
def equation_solving(view: ThiefView, *, oversample: float = 1.0, batch_size: int = 500) -> None:
    """Ask ``oversample * (d + 1)`` uniform random inputs (at most the budget) and solve for ``W, b``; on label
    answers, ask uniform inputs until the budget is spent.

    Args:
        oversample: queries as a multiple of the ``d + 1`` the system needs (1.0: exactly determined, the paper's
            minimum; more makes the least-squares fit robust to rounding of the answers).
        batch_size: queries per request.
    """
    d = math.prod(view.spec.shape)
    view.propose(lambda x, answers: solve_or_fit(view, x, answers))
    wanted, asked = math.ceil(oversample * (d + 1)), 0
    while view.remaining > 0:
        left = view.remaining if view.answers == "labels" else wanted - asked
        if left <= 0:
            return
        n = min(batch_size, left, view.remaining)
        view.ask(uniform_inputs(view.spec, n, view.generator))
        asked += n


def uniform_inputs(spec: VictimSpec, n: int, generator: torch.Generator) -> Tensor:
    """``n`` inputs drawn uniformly within the victim's bounds."""
    return spec.lower + (spec.upper - spec.lower) * torch.rand((n, *spec.shape), generator=generator)


def solve_or_fit(view: ThiefView, x: Tensor, answers: Tensor) -> nn.Module:
    """The solved linear copy from probability answers; the thief's recipe on label answers."""
    if answers.dim() == 1:
        return view.fit(x, answers)
    return solve_linear(x, answers)


def solve_linear(x: Tensor, probs: Tensor) -> nn.Module:
    """``Flatten``-``Linear`` whose softmax matches ``probs`` on ``x`` in the least-squares sense of the log-odds
    against class 0 (class 0's weights and bias are zero). Rows with a zero probability (underflow) are left out."""
    flat = x.flatten(1).double()
    logp = probs.double().log()
    keep = torch.isfinite(logp).all(1)
    design = torch.cat([flat, torch.ones(flat.shape[0], 1, dtype=torch.float64)], dim=1)[keep]
    log_odds = (logp[:, 1:] - logp[:, :1])[keep]
    theta = torch.linalg.pinv(design) @ log_odds  # (d + 1, C - 1), minimum norm when under-determined
    linear = nn.Linear(flat.shape[1], probs.shape[1])
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1:] = theta[:-1].T.float()
        linear.bias[1:] = theta[-1].float()
    return nn.Sequential(nn.Flatten(), linear).eval()
