"""Small pieces the extraction attacks share (no attack is registered here)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.stealing.base import ThiefView, VictimSpec


def hard_labels(answers: Tensor) -> Tensor:
    """``(N,)`` labels of answers that are labels already or ``(N, C)`` probabilities (their argmax)."""
    return answers.long() if answers.dim() == 1 else answers.argmax(1)


def as_distributions(answers: Tensor, num_classes: int) -> Tensor:
    """``(N, C)`` rows: probability answers as they are, label answers one-hot."""
    if answers.dim() == 2:
        return answers.float()
    return F.one_hot(answers.long(), num_classes).float()


def clip(x: Tensor, spec: VictimSpec) -> Tensor:
    """``x`` within the victim's input bounds."""
    return x.clamp(spec.lower, spec.upper)


def fit_on_labels(view: ThiefView) -> Callable[[Tensor, Tensor], nn.Module]:
    """The thief's recipe trained on the hard labels of the answers (probabilities are cut to their argmax)."""
    return lambda x, answers: view.fit(x, hard_labels(answers))


def draw(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``min(k, n)`` distinct indices of ``range(n)``, uniformly at random."""
    return torch.randperm(n, generator=generator)[:max(0, min(k, n))]


@torch.no_grad()
def softmax_of(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The model's class probabilities on ``x``, in batches."""
    parts = [F.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts) if parts else x.new_zeros(0)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row cross-entropy of ``logits`` against target distributions ``(N, C)``."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1)


def class_gradient(model: nn.Module, x: Tensor, classes: Tensor, batch_size: int = 500) -> Tensor:
    """Per row, ``d log p_c(x) / dx`` for the row's class ``c`` under the model's softmax: the Jacobian row of
    ``F_c`` up to a positive factor ``1 / p_c`` (so its sign is the sign of ``dF_c/dx``), computed without the
    underflow of ``p_c`` itself."""
    grads = []
    for i in range(0, x.shape[0], batch_size):
        part = x[i:i + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            chosen = F.log_softmax(model(part), dim=1).gather(1, classes[i:i + batch_size, None])
            (grad,) = torch.autograd.grad(chosen.sum(), part)
        grads.append(grad)
    return torch.cat(grads) if grads else torch.zeros_like(x)
