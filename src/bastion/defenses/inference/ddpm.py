"""A tiny DDPM for 28x28 images: noise schedule, noise-prediction U-Net-lite, training, sampling steps.

Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", NeurIPS. Linear beta schedule
(1e-4 .. 0.02 for T=1000, rescaled by 1000/T for shorter chains, as in Nichol & Dhariwal 2021), the
simple loss ``||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2`` with t uniform, and the
ancestral sampling step with sigma_t^2 = beta_t. Images live in [0, 1] for bastion and in [-1, 1] for the
diffusion model. The network is deliberately small (two resolutions, ~0.2M parameters) so that it trains
in CPU-minutes; it is meant as a purifier for small noise levels (DiffPure), not as a good generator.

Training command (the shipped checkpoints; time measured and stored in the checkpoint's metadata)::

    python -m bastion.defenses.inference.ddpm --dataset mnist --out src/bastion/zoo/weights/ddpm-mnist \
        --minutes 20 --seed 0

It stops after ``--minutes`` (wall clock) or ``--updates``, whichever comes first; the shipped checkpoints got
786 (MNIST) and 756 (Fashion-MNIST) updates of batch 64 in 20 minutes on a shared 2-core CPU, so an exact
re-run is ``--updates 786 --minutes 1000`` (the update count and seconds are in the checkpoint's metrics).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.zoo.architectures import register_arch
from bastion.zoo.checkpoint import CheckpointMeta, save_checkpoint

PAPER = "Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models"


@dataclass(frozen=True)
class Schedule:
    """Linear beta schedule of Ho et al. 2020, rescaled to ``steps`` steps."""

    steps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def betas(self) -> Tensor:
        scale = 1000.0 / self.steps
        return torch.linspace(scale * self.beta_start, scale * self.beta_end, self.steps, dtype=torch.float64)

    def alpha_bars(self) -> Tensor:
        return torch.cumprod(1.0 - self.betas(), 0)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017, as used by Ho et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNetLite(nn.Module):
    """eps_theta(x_t, t) for 28x28 inputs: 28 -> 14 -> 7 and back with skip connections."""

    def __init__(self, channels: int = 1, width: int = 16, steps: int = 100) -> None:
        super().__init__()
        self.steps = steps
        tdim = 4 * width
        self.tmlp = nn.Sequential(nn.Linear(width, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.width = width
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.down1 = ResBlock(width, width, tdim)
        self.pool1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * width, 2 * width, tdim)
        self.pool2 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * width, 2 * width, tdim)
        self.up2 = ResBlock(4 * width, 2 * width, tdim)
        self.up1 = ResBlock(3 * width, width, tdim)
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.tmlp(timestep_embedding(t, self.width))
        h1 = self.down1(self.inp(x), temb)                      # 28x28
        h2 = self.down2(self.pool1(h1), temb)                   # 14x14
        h = self.mid(self.pool2(h2), temb)                      # 7x7
        h = F.interpolate(h, size=h2.shape[-2:], mode="nearest")
        h = self.up2(torch.cat([h, h2], 1), temb)
        h = F.interpolate(h, size=h1.shape[-2:], mode="nearest")
        h = self.up1(torch.cat([h, h1], 1), temb)
        return self.out(h)


@register_arch("ddpm-unet-lite", "image", "Noise-prediction U-Net-lite of a small DDPM (DiffPure purifier), 28x28.")
def ddpm_unet_lite(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16, steps: int = 100
                   ) -> nn.Module:
    """``num_classes`` is unused (a DDPM is not a classifier); ``steps`` is the diffusion length T."""
    return UNetLite(input_shape[0], width, steps)


def diffuse(x0: Tensor, t: Tensor, noise: Tensor, alpha_bars: Tensor) -> Tensor:
    """q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for x0 in [-1, 1] and integer t in [0, T)."""
    ab = alpha_bars.to(x0)[t].view(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def reverse_step(net: nn.Module, x: Tensor, t: int, schedule: Schedule, noise: Tensor | None) -> Tensor:
    """One ancestral step p(x_{t-1} | x_t) of Ho et al. (eq. 11), sigma_t^2 = beta_t; ``noise`` None at t=0."""
    betas = schedule.betas().to(x)
    ab = schedule.alpha_bars().to(x)
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = net(x, tt)
    mean = (x - betas[t] / (1 - ab[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
    return mean if noise is None else mean + betas[t].sqrt() * noise


def ddim_step(net: nn.Module, x: Tensor, t: int, t_prev: int, schedule: Schedule) -> Tensor:
    """Deterministic DDIM step (Song, Meng & Ermon 2021, eta=0) from t to t_prev (t_prev=-1: to x_0)."""
    ab = schedule.alpha_bars().to(x)
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = net(x, tt)
    x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
    if t_prev < 0:
        return x0
    return ab[t_prev].sqrt() * x0 + (1 - ab[t_prev]).sqrt() * eps


def train_ddpm(x: Tensor, *, steps: int = 100, width: int = 16, batch_size: int = 64, lr: float = 2e-4,
               max_updates: int = 100_000, max_seconds: float = 360.0, generator: torch.Generator | None = None,
               ) -> tuple[UNetLite, dict[str, float]]:
    """Train eps_theta on images ``x`` in [0, 1] with the simple loss until ``max_updates`` or ``max_seconds``."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # parameter init from g; the global RNG is restored afterwards
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        net = UNetLite(x.shape[1], width, steps)
    schedule = Schedule(steps)
    ab = schedule.alpha_bars().float()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, updates, ema = time.perf_counter(), 0, None
    net.train()
    while updates < max_updates and time.perf_counter() - start < max_seconds:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        x0 = x[idx] * 2 - 1
        t = torch.randint(0, steps, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(net(diffuse(x0, t, noise, ab), t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        updates += 1
        value = loss.item()
        ema = value if ema is None else 0.98 * ema + 0.02 * value
    net.eval()
    return net, {"updates": updates, "train_seconds": round(time.perf_counter() - start, 1),
                 "final_loss_ema": round(ema or float("nan"), 5), "batch_size": batch_size}


def main(argv: list[str] | None = None) -> None:
    from bastion.data import load_dataset

    p = argparse.ArgumentParser(description="Train the tiny DDPM used by DiffPure and save it as a checkpoint.")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--updates", type=int, default=100_000, help="stop after this many updates (exact re-runs)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = load_dataset(a.dataset, seed=a.seed)
    net, metrics = train_ddpm(data.train.x, steps=a.steps, width=a.width, batch_size=a.batch_size,
                              max_seconds=60 * a.minutes, max_updates=a.updates,
                              generator=torch.Generator().manual_seed(a.seed))
    meta = CheckpointMeta(arch="ddpm-unet-lite", input_shape=tuple(data.spec.shape), num_classes=0,
                          dataset=a.dataset, arch_kwargs={"width": a.width, "steps": a.steps},
                          recipe={"method": "ddpm", "paper": PAPER, "schedule": "linear", "steps": a.steps,
                                  "optimizer": "adam", "lr": 2e-4, "batch_size": a.batch_size, "minutes": a.minutes,
                                  "threads": a.threads,
                                  "command": "python -m bastion.defenses.inference.ddpm " + " ".join(
                                      f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items())},
                          metrics=metrics, seed=a.seed)
    save_checkpoint(net, Path(a.out), meta)


if __name__ == "__main__":
    main()
