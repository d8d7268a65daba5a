"""Jacobian-based dataset augmentation (Papernot, McDaniel, Goodfellow, Jha, Celik & Swami 2017, "Practical
Black-Box Attacks against Machine Learning", AsiaCCS, Algorithm 1).

Start from the thief's seed set ``S_0`` (a few unlabelled problem-domain inputs) and ask the victim about it. Each
substitute epoch ``rho``: train a substitute on everything answered so far, then grow the set with one new point per
point of ``S_rho``, ``x + lambda_rho * sign(J_F(x)[O(x)])``: a step along the sign of the substitute's Jacobian row
for the class the victim (the oracle ``O``) gave ``x``, clipped to the input bounds; ask the victim about the new
points. ``S`` doubles each epoch, so the budget ends it early: a round that would pass the budget augments a random
``remaining``-point subset of ``S`` (uniform draws, as reservoir sampling makes them). The paper's MNIST setting:
150 seed points, ``rho = 6`` epochs, ``lambda = 0.1``.

The step's sign: Algorithm 1 writes ``+lambda``, which moves each point *into* its oracle class. The authors'
reference implementation (cleverhans' MNIST black-box tutorial, same settings) steps ``-lambda`` for the first three
epochs and ``+lambda`` for the next three: the periodic step size ``lambda * (-1) ** floor(rho / tau)`` of Papernot
et al. 2016 ("Transferability in Machine Learning"), with ``tau = 3`` and the first period stepping away from the
oracle class, towards the decision boundary. That is the default here (``tau=3``); ``tau=None`` is the constant
``+lambda`` (on the MNIST victim the constant step lowered the copy's fidelity below the seed-only copy's, where the
default raised it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.stealing.attacks._tools import class_gradient, clip, draw, hard_labels
from bastion.stealing.base import ThiefView, register_steal_attack

# (substitute, points, the victim's labels of them, step) -> the new points
Augment = Callable[[nn.Module, Tensor, Tensor, float], Tensor]


@register_steal_attack("jbda", access="labels",
                       paper="Papernot et al. 2017, Practical Black-Box Attacks against Machine Learning (JBDA)")
def jbda(view: ThiefView, *, rounds: int = 6, lam: float = 0.1, tau: int | None = 3,
         kappa: int | None = None) -> None:
    """Jacobian-based augmentation from the seed set.

    Args:
        rounds: substitute epochs ``rho`` (the paper: 6 on MNIST).
        lam: the step ``lambda`` (the paper: 0.1 for inputs in [0, 1]).
        tau: epochs per period of the step's sign, ``-lambda`` for the first ``tau`` epochs, then ``+lambda``, and
            so on (the reference implementation: 3); None: always ``+lambda`` (Algorithm 1 as written).
        kappa: augment at most ``kappa`` points of ``S`` per epoch, drawn at random (the 2016 follow-up's reservoir
            sampling, which keeps the per-epoch queries flat); None: every point (S doubles).
    """
    def step(model: nn.Module, x: Tensor, labels: Tensor, size: float) -> Tensor:
        return clip(x + size * class_gradient(model, x, labels).sign(), view.spec)

    augment_rounds(view, step, rounds=rounds, lam=lam, tau=tau, kappa=kappa)


def augment_rounds(view: ThiefView, augment: Augment, *, rounds: int, lam: float, tau: int | None,
                   kappa: int | None) -> None:
    """Algorithm 1's loop, shared with the T-RND variant: ask the seed, then per epoch train the substitute on
    everything answered and ask the augmented points, within the budget."""
    points = view.seed[draw(view.seed.shape[0], view.remaining, view.generator)]
    labels = hard_labels(view.ask(points))
    for rho in range(rounds):
        if view.remaining == 0:
            return
        substitute = view.fit(*view.answered())
        size = lam * (-1) ** (rho // tau + 1) if tau else lam
        chosen = draw(points.shape[0], min(kappa or points.shape[0], view.remaining), view.generator)
        new = augment(substitute, points[chosen], labels[chosen], size)
        points = torch.cat([points, new])
        labels = torch.cat([labels, hard_labels(view.ask(new))])
