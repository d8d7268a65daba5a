"""Model architectures. Every model takes unnormalized inputs in the data set's bounds ([0, 1] for
images); a ``Normalize`` layer inside the model does any standardization, so attacks and threat
models work in input space."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.registry import Registry


class Normalize(nn.Module):
    """(x - mean) / std per channel, as a layer of the model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.mean, self.std
        if x.dim() == 2:
            mean, std = mean.flatten(), std.flatten()
        return (x - mean) / std


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[..., nn.Module]
    modality: str
    description: str


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture", "bastion models list")


def register_arch(name: str, modality: str, description: str) -> Callable[[Callable], Callable]:
    return ARCHITECTURES.decorator(name, lambda fn: ArchSpec(name, fn, modality, description))


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: object) -> nn.Module:
    """Build an untrained ``arch`` for inputs of ``input_shape`` (one sample) and ``num_classes`` outputs."""
    return ARCHITECTURES.get(arch).build(tuple(input_shape), num_classes, **kwargs)


@register_arch("mlp", "any", "Flatten, two hidden layers of 256 ReLU units.")
def mlp(input_shape: tuple[int, ...], num_classes: int, *, width: int = 256, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


@register_arch("tabular-mlp", "tabular", "Two hidden layers of 64 ReLU units for feature vectors.")
def tabular_mlp(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64) -> nn.Module:
    return mlp(input_shape, num_classes, width=width, depth=2)


@register_arch("cnn", "image", "Small CNN: conv32-pool-conv64-pool-fc128 (422k parameters on 28x28).")
def cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int = 32, hidden: int = 128) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * (h // 4) * (w // 4), hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


class BasicBlock(nn.Module):
    """He et al. 2016 residual block: two 3x3 convs with batch norm, projection shortcut on a stride."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_arch("resnet", "image", "Small ResNet: 3 stages (16/32/64 channels) of basic blocks, for 28x28/32x32.")
def resnet(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, blocks: int = 1) -> nn.Module:
    c = input_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for b in range(blocks):
            layers.append(BasicBlock(cin, cout, 2 if (stage > 0 and b == 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


@register_arch("ccexam-cnn", "image", "The ccexam package's MNIST CNN layout (features/classifier), normalized inside.")
def ccexam_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CcexamNet(input_shape, num_classes)


class CcexamNet(nn.Module):
    """Same parameter names as ccexam's MNISTNet so its state_dict loads; (x-0.1307)/0.3081 folded in."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        c, h, _ = input_shape
        self.normalize = Normalize((0.1307,), (0.3081,))
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * (h // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))
