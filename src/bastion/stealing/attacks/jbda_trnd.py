"""JBDA with targeted randomised steps, T-RND (Juuti, Szyller, Marchal & Asokan 2019, "PRADA: Protecting
Against DNN Model Stealing Attacks", EuroS&P, Sec. III).

Papernot et al.'s loop (:mod:`bastion.stealing.attacks.jbda`: seed set, substitute epochs, the set doubling each
epoch within the budget), but each new point steps *towards a random class*: for ``x`` with the victim's label
``O(x)``, draw a target ``c`` uniformly among the other classes and take the targeted signed-gradient step
``x + lambda * sign(d log F_c(x) / dx)`` on the substitute ``F`` (a targeted FGSM step, ``x - lambda *
sign(grad_x L(F(x), c))`` for the cross-entropy ``L``), clipped to the input bounds. The steps spread the synthetic
points towards every class's region rather than along the oracle class's own gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.stealing.attacks._tools import class_gradient, clip
from bastion.stealing.attacks.jbda import augment_rounds
from bastion.stealing.base import ThiefView, register_steal_attack


@register_steal_attack("jbda-trnd", access="labels",
                       paper="Juuti et al. 2019, PRADA: Protecting against DNN Model Stealing Attacks (T-RND)")
def jbda_trnd(view: ThiefView, *, rounds: int = 6, lam: float = 0.1, kappa: int | None = None) -> None:
    """Targeted randomised Jacobian augmentation from the seed set.

    Args:
        rounds: substitute epochs (duplication rounds), as JBDA's ``rho = 6``.
        lam: the step size, JBDA's ``lambda = 0.1`` for inputs in [0, 1].
        kappa: augment at most ``kappa`` points per round, drawn at random; None: every point.
    """
    def step(model: nn.Module, x: Tensor, labels: Tensor, size: float) -> Tensor:
        targets = random_other_class(labels, view.spec.num_classes, view.generator)
        return clip(x + size * class_gradient(model, x, targets).sign(), view.spec)

    augment_rounds(view, step, rounds=rounds, lam=lam, tau=None, kappa=kappa)


def random_other_class(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """Per row, a class drawn uniformly among the ``num_classes - 1`` that are not the row's label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift.to(labels.device)) % num_classes
