"""Weight averaging against robust overfitting: an exponential moving average (EMA) or the stochastic weight
average (SWA) of the weights, with the batch-norm statistics recomputed for the averaged weights.

Izmailov, Podoprikhin, Garipov, Vetrov & Wilson 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization" (SWA: an equal-weight running average of the weights, taken once per epoch from a start epoch on,
optionally at a constant SWA learning rate, then batch-norm statistics recomputed for the averaged weights; here
with ``torch.optim.swa_utils``' ``AveragedModel`` and ``update_bn``); Gowal, Qin, Uesato, Mann & Kohli 2020,
"Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial Examples" (an EMA of the weights
improves robust accuracy and removes most robust overfitting; decay 0.995), as do Rebuffi et al. 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

DECAY = 0.995


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, step: int, decay: float = DECAY) -> None:
    """``average <- d * average + (1 - d) * model`` with ``d = min(decay, (1 + step) / (10 + step))`` (warm-up)."""
    d = min(decay, (1 + step) / (10 + step))
    for a, p in zip(average.parameters(), model.parameters(), strict=True):
        a.mul_(d).add_(p.detach(), alpha=1 - d)
    for a, b in zip(average.buffers(), model.buffers(), strict=True):
        a.copy_(b)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_bn(model: nn.Module, x: Tensor, batch_size: int = 256) -> None:
    """Re-estimate batch-norm running statistics of ``model`` on ``x`` (a no-op without batch norm)."""
    if not has_batch_norm(model):
        return
    torch.optim.swa_utils.update_bn([x[i:i + batch_size] for i in range(0, len(x), batch_size)], model)
    model.eval()


def swa_model(model: nn.Module) -> AveragedModel:
    """An equal-weight running average of ``model``'s parameters (empty until the first ``swa_update``); its
    buffers are not averaged: ``swa_update`` recomputes the batch-norm statistics for the averaged weights."""
    return AveragedModel(model)


@torch.no_grad()
def swa_update(average: AveragedModel, model: nn.Module, x: Tensor) -> nn.Module:
    """Add ``model``'s weights to the average (the mean of all weights added so far) and recompute its batch-norm
    statistics on ``x``; returns the averaged network (``average.module``) in eval mode."""
    average.update_parameters(model)
    recompute_bn(average.module, x)
    return average.module.eval()
