"""Interval bound propagation (IBP): verification and verifiable training.

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli 2018, "On the Effectiveness
of Interval Bound Propagation for Training Verifiably Robust Models", arXiv:1810.12715.

An axis-aligned box ``[lower, upper]`` around each input is pushed through the network layer by layer:
affine layers map the centre ``mu`` and radius ``r`` of the box to ``W mu + b`` and ``|W| r``; monotone
layers (ReLU, max/average pooling, flatten) map the two corners. The margin specification uses the
paper's *elision of the last layer*: the logit differences ``z_y - z_j`` are bounded by folding the
specification matrix ``C`` (rows ``e_y - e_j``) into the last linear layer, ``(C W) h + C b``, which is
tighter than subtracting the output intervals.

Training (the paper's section 4): ``loss = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat, y)`` where the
worst-case logits ``z_hat_j = -lower(z_y - z_j)`` (``z_hat_y = 0``). ``IBPSchedule`` holds the paper's
schedules: a warm-up with ``eps = 0`` and ``kappa = 1``, then a linear ramp of ``eps`` from 0 to its target
while ``kappa`` goes linearly from 1 to 0.5. The paper's MNIST defaults are a 2k-step warm-up and a
10k-step ramp (of 60k steps with batch 100).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.certification._layers import (
    check_conv,
    check_finite,
    elementwise_affine,
    flatten_layers,
    input_box,
    margin_spec,
)
from bastion.errors import InvalidInputError

SUPPORTED: tuple[type, ...] = (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout,
)
Interval = tuple[Tensor, Tensor]


def ibp_layers(model: nn.Module) -> list[nn.Module]:
    """The model's layers in order, or an error naming the first layer IBP cannot bound."""
    layers = flatten_layers(model, SUPPORTED, "IBP")
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            check_conv(layer, "IBP")
    return layers


def propagate(layer: nn.Module, lo: Tensor, hi: Tensor) -> Interval:
    """The interval image of ``[lo, hi]`` (batched) under one layer."""
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        mid = layer(mid)
        if isinstance(layer, nn.Linear):
            rad = F.linear(rad, layer.weight.abs())
        else:
            w = layer.weight.abs()
            rad = F.conv2d(rad, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        return mid - rad, mid + rad
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) or not isinstance(layer, SUPPORTED):
        scale, shift = elementwise_affine(layer, tuple(lo.shape[1:]), lo)
        mid, rad = scale * (hi + lo) / 2 + shift, scale.abs() * (hi - lo) / 2
        return mid - rad, mid + rad
    if isinstance(layer, nn.ReLU):  # F.relu: never in place, even for nn.ReLU(inplace=True)
        return F.relu(lo), F.relu(hi)
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return lo, hi
    return layer(lo), layer(hi)  # monotone non-decreasing: pooling, flatten


def layer_intervals(layers: list[nn.Module], lo: Tensor, hi: Tensor) -> list[Interval]:
    """Intervals at the input of every layer, then at the output: ``len(layers) + 1`` pairs."""
    bounds = [(lo, hi)]
    for layer in layers:
        bounds.append(propagate(layer, *bounds[-1]))
    return bounds


def interval_bounds(model: nn.Module, lower: Tensor, upper: Tensor) -> Interval:
    """Elementwise bounds ``(lo, hi)`` on ``model(x)`` for every ``x`` with ``lower <= x <= upper``.

    Differentiable in the model's parameters (used for training); never mutates its arguments.
    """
    if lower.shape != upper.shape or (lower > upper).any():
        raise InvalidInputError("lower and upper must have the same shape and satisfy lower <= upper.")
    return layer_intervals(ibp_layers(model), lower, upper)[-1]


def spec_lower_bounds(layers: list[nn.Module], bounds: list[Interval], spec: Tensor) -> Tensor:
    """Lower bounds (N, M) of ``spec @ f(x)`` with ``spec`` (N, M, K), eliding the last linear layer."""
    last = layers[-1] if layers else None
    if isinstance(last, nn.Linear):
        lo, hi = bounds[-2]
        weight = spec @ last.weight  # (N, M, in)
        bias: Tensor | float = spec @ last.bias if last.bias is not None else 0.0
    else:
        lo, hi = bounds[-1]
        weight, bias = spec, 0.0
    mid, rad = ((hi + lo) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    return (weight @ mid[:, :, None]).squeeze(2) - (weight.abs() @ rad[:, :, None]).squeeze(2) + bias


def margin_bounds(
    model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, lower: float = 0.0, upper: float = 1.0
) -> Tensor:
    """Lower bounds (N, K-1) of the margins ``z_y - z_j`` (``j != y``) over the L-inf ball of ``eps``."""
    check_finite(x)
    layers = ibp_layers(model)
    bounds = layer_intervals(layers, *input_box(x, eps, lower, upper))
    spec = margin_spec(y, bounds[-1][0].shape[1], x)
    return spec_lower_bounds(layers, bounds, spec)


@torch.no_grad()
def verified(
    model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, lower: float = 0.0, upper: float = 1.0
) -> Tensor:
    """Boolean (N,): IBP proves ``argmax model(x') == y`` on the whole L-inf ball inside the box."""
    return (margin_bounds(model, x, y, eps, lower=lower, upper=upper) > 0).all(1)


def worst_case_logits(margins: Tensor, y: Tensor) -> Tensor:
    """Logits ``z_hat``: ``z_hat_y = 0``, ``z_hat_j = -lower(z_y - z_j)`` from (N, K-1) margin bounds."""
    n, k = margins.shape[0], margins.shape[1] + 1
    out = torch.zeros(n, k, device=margins.device, dtype=margins.dtype)
    keep = torch.ones(n, k, dtype=torch.bool, device=margins.device)
    keep[torch.arange(n, device=margins.device), y] = False
    return out.masked_scatter(keep, -margins)


@dataclass(frozen=True)
class IBPSchedule:
    """Gowal et al.'s schedules: ``warmup_steps`` at eps 0 (kappa 1), then ``ramp_steps`` of linear ramp.

    ``eps`` is the target training radius; kappa moves linearly from ``kappa_start`` to ``kappa_end``
    during the ramp. Defaults are the paper's MNIST values.
    """

    eps: float
    warmup_steps: int = 2_000
    ramp_steps: int = 10_000
    kappa_start: float = 1.0
    kappa_end: float = 0.5

    def progress(self, step: int) -> float:
        if self.ramp_steps <= 0:
            return 0.0 if step < self.warmup_steps else 1.0
        return min(max((step - self.warmup_steps) / self.ramp_steps, 0.0), 1.0)

    def eps_at(self, step: int) -> float:
        return self.eps * self.progress(step)

    def kappa_at(self, step: int) -> float:
        return self.kappa_start + (self.kappa_end - self.kappa_start) * self.progress(step)


@dataclass(frozen=True)
class IBPStep:
    """What one training step did: total, clean and robust losses, and the scheduled eps and kappa."""

    loss: float
    clean_loss: float
    robust_loss: float
    eps: float
    kappa: float


def ibp_loss(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, kappa: float,
    lower: float = 0.0, upper: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, clean CE, robust CE)`` with ``loss = kappa * clean + (1 - kappa) * robust``."""
    clean = F.cross_entropy(model(x), y)
    if kappa >= 1.0:
        return clean, clean, torch.zeros_like(clean)
    margins = margin_bounds(model, x, y, eps, lower=lower, upper=upper)
    robust = F.cross_entropy(worst_case_logits(margins, y), y)
    return kappa * clean + (1 - kappa) * robust, clean, robust


def ibp_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    step: int,
    schedule: IBPSchedule,
    lower: float = 0.0,
    upper: float = 1.0,
) -> IBPStep:
    """One optimizer step of IBP training at training step ``step`` of ``schedule``.

    BatchNorm layers must be in eval mode (IBP uses their running statistics as a fixed affine map).
    """
    eps, kappa = schedule.eps_at(step), schedule.kappa_at(step)
    optimizer.zero_grad(set_to_none=True)
    loss, clean, robust = ibp_loss(model, x, y, eps=eps, kappa=kappa, lower=lower, upper=upper)
    loss.backward()
    optimizer.step()
    return IBPStep(float(loss.detach()), float(clean.detach()), float(robust.detach()), eps, kappa)
