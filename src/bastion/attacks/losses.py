"""Losses shared by gradient attacks. Each returns one value per sample; attacks ascend it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Per-sample CE; for targeted attacks the negative CE to the target (ascending it reaches the target)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return -ce if targeted else ce


def margin(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Carlini & Wagner's margin: best other logit minus the true logit (untargeted),
    or the target logit minus the best other logit (targeted). Positive means adversarial."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - others if targeted else others - own


def dlr(logits: Tensor, labels: Tensor, targeted: bool = False, *, target_ranks: Tensor | None = None) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, eq. 5 and its targeted form eq. 6).

    Untargeted: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3). Targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2),
    where here ``labels`` are the *true* labels and ``target_ranks`` hold the target classes.
    """
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if not targeted:
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        return -(own - others) / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)
    assert target_ranks is not None, "targeted DLR needs the target classes"
    tgt = logits.gather(1, target_ranks[:, None]).squeeze(1)
    denom = sorted_logits[:, 0] - (sorted_logits[:, 2] + sorted_logits[:, 3]) / 2 + 1e-12
    return -(own - tgt) / denom


LOSSES = {"ce": cross_entropy, "cw": margin}


def is_adversarial(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Boolean ``(N,)``: prediction differs from ``labels`` (untargeted) or equals them (targeted)."""
    pred = logits.argmax(1)
    return pred == labels if targeted else pred != labels


def input_gradient(model: torch.nn.Module, x: Tensor, labels: Tensor, loss_fn,
                   targeted: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: returns (logits, d loss / d x, per-sample loss) without touching model
    grads."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = loss_fn(logits, labels, targeted)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), grad.detach(), loss.detach()
