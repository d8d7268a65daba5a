"""Weight averaging against robust overfitting: an exponential moving average of the weights, with the
batch-norm statistics recomputed for the averaged weights.

Izmailov, Podoprikhin, Garipov, Vetrov & Wilson 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization" (SWA, BN recomputation); Gowal, Qin, Uesato, Mann & Kohli 2020, "Uncovering the Limits of
Adversarial Training against Norm-Bounded Adversarial Examples" (EMA of the weights improves robust accuracy
and removes most robust overfitting; decay 0.995).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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
