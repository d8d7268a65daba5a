"""Reverse sigmoid (Lee, Edwards, Molloy & Su 2019, "Defending Against NN Model Stealing Attacks Using Deceptive
Perturbations", IEEE S&P Workshops): each probability ``y`` is answered as

    y_hat = alpha * (y - beta * (s(gamma * logit(y)) - 1/2))

with ``s`` the sigmoid, ``logit`` its inverse (``s^-1``), ``beta > 0`` the perturbation's magnitude, ``gamma > 0``
its convergence, and ``alpha`` the normaliser that makes the row sum to 1 (entries below 0 are first clipped to
0). A thief that fits a sigmoid/softmax output to these answers is pushed towards the wrong logits, since the
perturbation grows as ``y`` nears 0 or 1. Defaults beta=1, gamma=0.1 as in the paper's reference implementation
(ART's ``ReverseSigmoid``; the paper tunes gamma per model); probabilities are clipped to ``[1e-9, 1 - 1e-9]``
before the logit, as there.

The paper calls the perturbation top-1 preserving "in most cases": it is not in all. ``y - beta * (s(gamma
logit y) - 1/2)`` is not monotone in ``y`` (near 0 it rises as ``y`` falls: with beta=1, gamma=0.1 a class at
1e-9 is answered 0.39 before normalising, one at 0.5 answered 0.5), so a low-confidence top class can lose to
classes the victim gives almost nothing (tests/stealing/test_defenses.py builds one such row).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, OutputDefense, register_output_defense

CLIP = 1e-9


def reverse_sigmoid_probs(probs: Tensor, beta: float, gamma: float) -> Tensor:
    """The normalised reverse-sigmoid answer to each row of ``probs`` (computed in float64)."""
    y = probs.double()
    r = beta * (torch.sigmoid(gamma * torch.logit(y.clamp(CLIP, 1.0 - CLIP))) - 0.5)
    out = (y - r).clamp(0.0, 1.0)
    return (out / out.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)).to(probs.dtype)


class ReverseSigmoid(OutputDefense):
    def __init__(self, victim: nn.Module, beta: float, gamma: float) -> None:
        super().__init__(victim)
        self.beta, self.gamma = beta, gamma

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        return reverse_sigmoid_probs(probs, self.beta, self.gamma)


@register_output_defense("reverse-sigmoid", answers="probs", paper="Lee et al. 2019 (reverse sigmoid)")
def reverse_sigmoid(victim: nn.Module, ctx: DefenseContext, *, beta: float = 1.0, gamma: float = 0.1) -> nn.Module:
    """Reverse-sigmoid perturbation of magnitude ``beta`` and convergence ``gamma`` (reference defaults 1, 0.1)."""
    if beta <= 0 or gamma <= 0:
        raise InvalidInputError(f"reverse-sigmoid: beta={beta} and gamma={gamma} must both be positive "
                                "(defaults 1.0 and 0.1).")
    return ReverseSigmoid(victim, beta, gamma).eval()
