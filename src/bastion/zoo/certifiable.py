"""Architectures for certified training (issue 8), registered with the zoo so checkpoints reload.

``crown-cnn``: a small conv net without max-pooling (strided convolutions instead), an ``nn.Sequential`` of
the layer types every certifier supports (IBP and CROWN / CROWN-IBP), close to the "DM-small" model of
Gowal et al. 2018 (conv16 4x4/2, conv32 4x4/2, fc100).
``lipschitz-mlp``: the 1-Lipschitz GroupSort MLP of ``bastion.zoo.lipschitz_layers`` (L2 margin certificates).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bastion.zoo.architectures import register_arch


@register_arch("crown-cnn", "image",
               "Certifiable CNN for IBP/CROWN: conv16 4x4/2-conv32 4x4/2-fc100, no max-pooling (166k params on 28x28).")
def crown_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, hidden: int = 100) -> nn.Module:
    c, h, w = input_shape
    ho, wo = math.ceil(h / 4), math.ceil(w / 4)
    return nn.Sequential(
        nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * ho * wo, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_arch("lipschitz-mlp", "any",
               "1-Lipschitz (L2) MLP: Björck-orthonormalized dense layers with GroupSort (MaxMin) activations.")
def lipschitz_mlp_arch(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 256, depth: int = 3
) -> nn.Module:
    from bastion.zoo.lipschitz_layers import lipschitz_mlp

    # Initialization follows the global RNG (``zoo.train.init_model`` seeds it) through a derived generator.
    seed = int(torch.randint(0, 2**62, ()))
    return lipschitz_mlp(input_shape, num_classes, width=width, depth=depth,
                         generator=torch.Generator().manual_seed(seed))
