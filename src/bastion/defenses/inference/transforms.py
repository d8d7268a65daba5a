"""Input-transformation defenses: JPEG, spatial smoothing, random resize-and-pad, noise, thermometer.

- JPEG compression: Dziugaite, Ghahramani & Roy 2016, "A study of the effect of JPG compression on
  adversarial images"; Guo, Rana, Cisse & van der Maaten 2018, "Countering Adversarial Images using Input
  Transformations", ICLR (quality 75). A Pillow round trip: piecewise constant in the input, so its
  gradient is zero (``zero_gradient``) and the adaptive evaluation uses BPDA (Athalye et al. 2018).
- Spatial smoothing: a Gaussian low-pass filter (linear, differentiable) -- the smoothing baseline
  next to Xu et al.'s median filter.
- Random resize and pad: Xie, Wang, Zhang, Ren & Yuille 2018, "Mitigating Adversarial Effects Through
  Randomization", ICLR: resize to a random size r in [299, 331) and pad randomly to 331 (ratio ~0.9). Here
  the image is shrunk to a random r in [ceil(0.9 H), H] and zero-padded at a random offset back to H x W.
- Gaussian noise injection: x + N(0, sigma^2), as the input noise layer of Random Self-Ensemble (Liu,
  Cheng, Zhang & Hsieh 2018, "Towards Robust Neural Networks via Random Self-ensemble", ECCV).
- Thermometer encoding: Buckman, Roy, Raffel & Goodfellow 2018, "Thermometer Encoding: One Hot Way To
  Resist Adversarial Examples", ICLR (16 levels). Quantization (zero gradient) followed by the exact
  thermometer code written as a piecewise-linear map of the quantized value, then a 1x1 read-out
  (initialised to the mean over levels) into the wrapped classifier. Buckman et al. train the classifier
  on the codes; ``train_readout`` fine-tunes the read-out and the classifier on encoded clean data.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from bastion.defenses.inference.base import Preprocessed, randn, register_defense, seeded, zero_gradient


class JPEG(nn.Module):
    """JPEG round trip through Pillow at ``quality`` (1..95). Inputs in [0, 1], 1 or 3 channels."""

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must be in 1..95, got {quality}")
        self.quality = quality

    def _one(self, img: np.ndarray) -> np.ndarray:
        arr = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        mode = "L" if arr.shape[0] == 1 else "RGB"
        pil = Image.fromarray(arr[0] if mode == "L" else arr.transpose(1, 2, 0), mode=mode)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=self.quality)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(mode), dtype=np.float32) / 255.0
        return out[None] if mode == "L" else out.transpose(2, 0, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
        arr = x.detach().float().cpu().numpy()
        out = torch.from_numpy(np.stack([self._one(a) for a in arr])).to(x)
        return zero_gradient(out, x)


class GaussianBlur(nn.Module):
    """Depthwise Gaussian filter, standard deviation ``sigma`` pixels, kernel 2*ceil(2 sigma)+1."""

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        radius = max(1, math.ceil(2 * sigma))
        g = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
        g = g / g.sum()
        self.register_buffer("kernel", (g[:, None] * g[None, :])[None, None])
        self.radius = radius

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        padded = F.pad(x, (self.radius,) * 4, mode="reflect")
        return F.conv2d(padded, self.kernel.to(x).expand(c, 1, -1, -1), groups=c)


class RandomResizePad(nn.Module):
    """Shrink to a random size in [ceil(ratio * H), H], zero-pad at a random offset back to H x W.
    One draw per call from the module's own generator (Xie et al. draw once per image batch)."""

    def __init__(self, ratio: float = 0.9, seed: int = 0) -> None:
        super().__init__()
        self.ratio = ratio
        self.generator = seeded(seed)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        lo = math.ceil(self.ratio * h)
        r = int(torch.randint(lo, h + 1, (1,), generator=self.generator))
        rw = max(1, round(r * w / h))
        top = int(torch.randint(0, h - r + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, w - rw + 1, (1,), generator=self.generator))
        small = F.interpolate(x, size=(r, rw), mode="bilinear", align_corners=False)
        return F.pad(small, (left, w - rw - left, top, h - r - top))


class GaussianNoise(nn.Module):
    """x + N(0, sigma^2) from the module's own generator, clipped to [lower, upper]."""

    def __init__(self, sigma: float = 0.1, lower: float = 0.0, upper: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.sigma, self.lower, self.upper = sigma, lower, upper
        self.generator = seeded(seed)

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.sigma * randn(x.shape, self.generator, x)).clamp(self.lower, self.upper)


class Quantize(nn.Module):
    """Round [0, 1] values down to ``levels`` levels {0, 1/levels, ..., (levels-1)/levels}: zero gradient."""

    def __init__(self, levels: int = 16) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return torch.floor(x.clamp(0, 1 - 1e-6) * self.levels) / self.levels


class ThermometerCode(nn.Module):
    """Exact thermometer code of quantized values q = j/levels: channel k is 1 iff j >= k (k = 1..levels-1
    plus the always-on k=0), written as clamp(levels*q - k + 1, 0, 1) so it is piecewise linear."""

    def __init__(self, levels: int = 16) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, q: Tensor) -> Tensor:
        k = torch.arange(self.levels, device=q.device, dtype=q.dtype).view(1, 1, -1, 1, 1)
        code = (self.levels * q.unsqueeze(2) - k + 1).clamp(0, 1)  # (N, C, L, H, W)
        return code.flatten(1, 2)


class Thermometer(nn.Module):
    """Quantize -> thermometer code -> 1x1 read-out to C channels -> classifier."""

    def __init__(self, model: nn.Module, channels: int = 1, levels: int = 16) -> None:
        super().__init__()
        self.quantize = Quantize(levels)
        self.encode = ThermometerCode(levels)
        self.readout = nn.Conv2d(channels * levels, channels, 1, groups=channels)
        with torch.no_grad():  # mean over the levels: k/levels for code with k ones, i.e. the quantized value
            self.readout.weight.fill_(1.0 / levels)
            self.readout.bias.fill_(-1.0 / levels)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.readout(self.encode(self.quantize(x))))


def train_readout(defended: Thermometer, x: Tensor, y: Tensor, *, epochs: int = 1, lr: float = 1e-3,
                  batch_size: int = 128, generator: torch.Generator | None = None) -> Thermometer:
    """Fine-tune the read-out and the classifier on thermometer-encoded clean data (in place; returns it)."""
    g = generator if generator is not None else seeded(0)
    params = [p for p in defended.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    defended.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(defended(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return defended.eval()


GUO = "Guo, Rana, Cisse & van der Maaten 2018, Countering Adversarial Images using Input Transformations"


@register_defense("jpeg", paper=f"Dziugaite et al. 2016; {GUO}", kind="preprocessing", randomized=False,
                  differentiable=False, description="Pillow JPEG round trip at `quality` (Guo et al.: 75).",
                  clean_drop=0.05)
def build_jpeg(model: nn.Module, *, quality: int = 75) -> nn.Module:
    return Preprocessed(JPEG(quality), model)


@register_defense("spatial-smoothing", paper="Gaussian low-pass baseline (cf. Xu et al. 2018 local smoothing)",
                  kind="preprocessing", randomized=False, differentiable=True,
                  description="Gaussian low-pass filter of standard deviation `sigma` pixels.", clean_drop=0.05)
def build_smoothing(model: nn.Module, *, sigma: float = 0.5) -> nn.Module:
    return Preprocessed(GaussianBlur(sigma), model)


@register_defense("random-resize-pad", paper="Xie et al. 2018, Mitigating Adversarial Effects Through Randomization",
                  kind="preprocessing", randomized=True, differentiable=True,
                  description="Random shrink to [ratio*H, H] and random zero padding (Xie et al.: ratio 299/331).",
                  clean_drop=0.10)
def build_resize_pad(model: nn.Module, *, ratio: float = 0.9, seed: int = 0) -> nn.Module:
    return Preprocessed(RandomResizePad(ratio, seed), model)


@register_defense("gaussian-noise", paper="Liu et al. 2018, Towards Robust Neural Networks via Random Self-ensemble",
                  kind="preprocessing", randomized=True, differentiable=True,
                  description="Add N(0, sigma^2) noise to the input on every call.", clean_drop=0.10)
def build_noise(model: nn.Module, *, sigma: float = 0.1, seed: int = 0) -> nn.Module:
    return Preprocessed(GaussianNoise(sigma, seed=seed), model)


@register_defense("thermometer", paper="Buckman et al. 2018, Thermometer Encoding: One Hot Way To Resist Adversarial "
                  "Examples", kind="preprocessing", randomized=False, differentiable=False,
                  description="16-level thermometer code with a 1x1 read-out (fine-tune with train_readout).",
                  clean_drop=0.05)
def build_thermometer(model: nn.Module, *, levels: int = 16, channels: int = 1) -> nn.Module:
    return Thermometer(model, channels, levels)
