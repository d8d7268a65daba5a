"""Feature squeezing (Xu, Evans & Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep
Neural Networks", NDSS): bit-depth reduction, median filtering (local smoothing), non-local means.

Xu et al.'s settings: MNIST uses 1-bit depth and a 2x2 median filter; CIFAR-10 / ImageNet use 5-bit /
4-bit depth, 2x2 median and non-local means "11-3-4" (search window 11, patch 3, filter strength 4 on
the 0-255 scale). Bit-depth reduction is piecewise constant: its gradient is zero almost everywhere,
which the evaluation's diagnostics detect (BPDA). The median filter and non-local means are implemented
in torch and are differentiable almost everywhere (the median passes the gradient to the selected
pixel; NLM is a softmax-weighted average), so gradient attacks work through them without BPDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.inference.base import Preprocessed, register_defense

PAPER = "Xu, Evans & Qi 2018, Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks"


class BitDepth(nn.Module):
    """Round each value to ``bits`` bits in [lower, upper]. Zero gradient almost everywhere."""

    def __init__(self, bits: int = 1, lower: float = 0.0, upper: float = 1.0) -> None:
        super().__init__()
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in 1..16, got {bits}")
        self.bits, self.lower, self.upper = bits, lower, upper

    def forward(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        unit = (x - self.lower) / (self.upper - self.lower)
        return torch.round(unit.clamp(0, 1) * levels) / levels * (self.upper - self.lower) + self.lower


class MedianFilter(nn.Module):
    """``size`` x ``size`` median filter with reflect padding (the window's upper median for even sizes
    as in scipy's ``median_filter`` that Xu et al. used; 2x2 windows cover the pixel and its right/down
    neighbours)."""

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        k = self.size
        before, after = (k - 1) // 2, k // 2
        padded = F.pad(x, (before, after, before, after), mode="reflect" if k > 2 else "replicate")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        flat = patches.reshape(*patches.shape[:4], k * k)
        return flat.sort(-1).values[..., (k * k) // 2]


class NonLocalMeans(nn.Module):
    """Non-local means (Buades et al. 2005) with Gaussian-free patch distances, as in OpenCV's fast NLM:
    weight(p, q) = exp(-max(d2(p, q) - 2 sigma^2, 0) / h^2) over a ``search`` window, ``patch`` x ``patch``
    patches; ``strength`` h on the 0-255 scale (Xu et al.: 11-3-4)."""

    def __init__(self, search: int = 11, patch: int = 3, strength: float = 4.0) -> None:
        super().__init__()
        self.search, self.patch, self.h = search, patch, strength / 255.0

    def forward(self, x: Tensor) -> Tensor:
        r, p = self.search // 2, self.patch // 2
        padded = F.pad(x, (r, r, r, r), mode="reflect")
        h, w = x.shape[-2:]
        total = torch.zeros_like(x)
        weights = torch.zeros_like(x)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                shifted = padded[..., r + dy:r + dy + h, r + dx:r + dx + w]
                d2 = F.avg_pool2d((x - shifted) ** 2, 2 * p + 1, stride=1, padding=p, count_include_pad=False)
                wt = torch.exp(-d2 / (self.h**2))
                total = total + wt * shifted
                weights = weights + wt
        return total / weights


@register_defense("bit-depth", paper=PAPER, kind="preprocessing", randomized=False, differentiable=False,
                  description="Reduce every value to `bits` bits (MNIST: 1 bit, CIFAR: 5 bits).", clean_drop=0.05)
def build_bit_depth(model: nn.Module, *, bits: int = 1, lower: float = 0.0, upper: float = 1.0) -> nn.Module:
    return Preprocessed(BitDepth(bits, lower, upper), model)


@register_defense("median-filter", paper=PAPER, kind="preprocessing", randomized=False, differentiable=True,
                  description="Local spatial smoothing by a `size`x`size` median filter (Xu et al.: 2x2).",
                  clean_drop=0.05)
def build_median(model: nn.Module, *, size: int = 2) -> nn.Module:
    return Preprocessed(MedianFilter(size), model)


@register_defense("non-local-means", paper=PAPER, kind="preprocessing", randomized=False, differentiable=True,
                  description="Non-local means denoising, search-patch-strength 11-3-4 (Xu et al.'s CIFAR setting).",
                  clean_drop=0.05)
def build_nlm(model: nn.Module, *, search: int = 11, patch: int = 3, strength: float = 4.0) -> nn.Module:
    return Preprocessed(NonLocalMeans(search, patch, strength), model)
