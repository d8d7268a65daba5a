"""1-Lipschitz networks (L2) and their margin certificates.

The networks are built from the 1-Lipschitz layers of ``bastion.zoo.lipschitz_layers`` (GroupSort activations and
Björck-orthonormalized dense layers, Anil, Lucas & Grosse 2019); they are re-exported here.

Tsuzuku, Sato & Sugiyama 2018, "Lipschitz-Margin Training", NeurIPS: if ``f`` is ``L``-Lipschitz in L2,
each logit difference ``f_y - f_j`` is ``sqrt(2) L``-Lipschitz, so the prediction cannot change within
L2 radius ``margin / (sqrt(2) L)`` where ``margin = f_y(x) - max_{j != y} f_j(x)``.

Convolutions are not offered: for small inputs flatten and use a dense ``OrthoLinear``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.zoo.lipschitz_layers import ONE_LIPSCHITZ, GroupSort, OrthoLinear, bjorck_orthonormalize, lipschitz_mlp

__all__ = ["GroupSort", "LipschitzCertificate", "OrthoLinear", "bjorck_orthonormalize", "lipschitz_certify",
           "lipschitz_constant", "lipschitz_mlp"]


@torch.no_grad()
def lipschitz_constant(model: nn.Module) -> float:
    """An upper bound on the model's L2 Lipschitz constant: the product of its layers' exact spectral norms.

    Accepts a (nested) ``nn.Sequential`` of OrthoLinear, Linear, GroupSort, ReLU, Flatten and Identity.
    """
    if isinstance(model, nn.Sequential):
        return math.prod(lipschitz_constant(layer) for layer in model)
    if isinstance(model, OrthoLinear):
        return float(torch.linalg.matrix_norm(model.orthonormal_weight().double(), ord=2))
    if isinstance(model, nn.Linear):
        return float(torch.linalg.matrix_norm(model.weight.double(), ord=2))
    if isinstance(model, ONE_LIPSCHITZ):
        return 1.0
    raise InvalidInputError(
        f"No Lipschitz bound for layer type {type(model).__name__}; build the model with lipschitz_mlp "
        "or from OrthoLinear, Linear, GroupSort, ReLU and Flatten layers, or pass lipschitz= explicitly."
    )


@dataclass(frozen=True)
class LipschitzCertificate:
    """Per input: predicted class, margin ``f_y - max_{j != y} f_j``, certified L2 radius (0 when the
    prediction is wrong), and the Lipschitz constant used."""

    prediction: Tensor  # (N,) long
    margin: Tensor  # (N,)
    radius: Tensor  # (N,)
    lipschitz: float


@torch.no_grad()
def lipschitz_certify(
    model: nn.Module, x: Tensor, y: Tensor, *, lipschitz: float | None = None
) -> LipschitzCertificate:
    """Tsuzuku et al.'s margin certificate: radius ``max(margin, 0) / (sqrt(2) L)`` in L2.

    ``L`` defaults to ``lipschitz_constant(model)`` (about 1 for a ``lipschitz_mlp``).
    """
    if model.training:
        raise InvalidInputError("The model is in train mode; call model.eval() before certifying it.")
    lip = lipschitz_constant(model) if lipschitz is None else float(lipschitz)
    if not lip > 0:
        raise InvalidInputError(f"The Lipschitz constant must be positive; got {lip}.")
    logits = model(x)
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    margin = own - others
    radius = margin.clamp_min(0) / (math.sqrt(2) * lip)
    return LipschitzCertificate(logits.argmax(1), margin, radius, lip)
