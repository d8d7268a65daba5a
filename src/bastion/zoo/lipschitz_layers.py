"""1-Lipschitz building blocks (L2): GroupSort activations and Björck-orthonormalized dense layers.

Anil, Lucas & Grosse 2019, "Sorting out Lipschitz function approximation", ICML: GroupSort activations
(MaxMin is group size 2) and dense layers orthonormalized by Björck & Bowie's iteration at every forward
pass, ``W <- (1 + beta) W - beta W W^T W`` with ``beta = 0.5`` and 20 iterations (the paper's settings).
Each weight is first divided by its Frobenius norm, so every singular value starts in ``[0, 1]``; the
iteration maps ``s`` to ``1.5 s - 0.5 s^3``, which stays in ``[0, 1]``: each layer's spectral norm is at
most 1 whatever the number of iterations (more iterations only bring it closer to orthogonal).

They are architectures (the zoo builds ``lipschitz-mlp`` from them); their certificates are in
``bastion.certification.lipschitz``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import InvalidInputError


class GroupSort(nn.Module):
    """Sort each consecutive group of ``group_size`` features (dim 1) in descending order; 1-Lipschitz and
    gradient-norm preserving. ``group_size=2`` is MaxMin."""

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, d = x.shape[0], x.shape[1]
        if d % self.group_size:
            raise InvalidInputError(
                f"GroupSort needs a feature count divisible by {self.group_size}; got {d}."
            )
        grouped = x.reshape(n, d // self.group_size, self.group_size, *x.shape[2:])
        return grouped.sort(dim=2, descending=True).values.reshape(x.shape)


def bjorck_orthonormalize(weight: Tensor, *, iters: int = 20, beta: float = 0.5) -> Tensor:
    """First-order Björck & Bowie orthonormalization with spectral norm at most 1 after any ``iters``."""
    tall = weight.shape[0] >= weight.shape[1]
    w = weight if tall else weight.T
    w = w / w.norm().clamp_min(1e-12)  # Frobenius norm >= spectral norm
    for _ in range(iters):
        w = (1 + beta) * w - beta * w @ (w.T @ w)
    return w if tall else w.T


class OrthoLinear(nn.Module):
    """A dense layer whose weight is orthonormalized (Björck) at every forward pass: spectral norm <= 1."""

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, iters: int = 20, beta: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.iters, self.beta = iters, beta
        weight = torch.empty(out_features, in_features)
        self.weight = nn.Parameter(nn.init.orthogonal_(weight, generator=generator))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def orthonormal_weight(self) -> Tensor:
        return bjorck_orthonormalize(self.weight, iters=self.iters, beta=self.beta)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.orthonormal_weight(), self.bias)


def lipschitz_mlp(
    in_shape: tuple[int, ...], num_classes: int, width: int = 256, depth: int = 3, *,
    group_size: int = 2, generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Flatten, ``depth`` hidden (``OrthoLinear``, GroupSort) layers of ``width`` units, an ``OrthoLinear``.

    Initialization draws from ``generator`` (a fixed seed-0 generator when omitted; the global RNG is
    never used).
    """
    if width % group_size:
        raise InvalidInputError(f"width ({width}) must be divisible by group_size ({group_size}).")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(in_shape)
    for _ in range(depth):
        layers += [OrthoLinear(d, width, generator=g), GroupSort(group_size)]
        d = width
    layers.append(OrthoLinear(d, num_classes, generator=g))
    return nn.Sequential(*layers)


ONE_LIPSCHITZ = (GroupSort, nn.Flatten, nn.Identity, nn.ReLU)
