"""Gray-box evaluation: train a surrogate from partial knowledge, attack it, measure transfer to the target.

Partial knowledge means a subset of the data (labelled with the true labels, or by querying the
target's labels as in Papernot et al. 2017, "Practical Black-Box Attacks against Machine Learning") and
an assumed architecture. ``train_surrogate`` fits it with the caller's ``train_fn`` or a small built-in
Adam loop; ``transfer_attack`` crafts adversarial examples on the surrogate(s) with any registered
white-box or transfer attack (default ``mi-fgsm``), re-projects them onto the threat model, queries the
target once per example and reports the transfer success rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import get_attack
from bastion.attacks.mi_fgsm import as_surrogate
from bastion.blackbox.target import query_labels
from bastion.oracle import attribute
from bastion.threat import LpThreat

TrainFn = Callable[[nn.Module, Tensor, Tensor], object]


def label_with_target(target: nn.Module, x: Tensor, *, batch_size: int = 256) -> Tensor:
    """The target's predicted labels for ``x`` (one query per input; labels only)."""
    parts = []
    for i in range(0, x.shape[0], batch_size):
        with attribute(target, torch.arange(i, min(i + batch_size, x.shape[0]))):
            parts.append(query_labels(target, x[i:i + batch_size]))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=x.device)


def train_surrogate(
    surrogate: nn.Module, x: Tensor, y: Tensor, *, train_fn: TrainFn | None = None, epochs: int = 30,
    lr: float = 1e-2, batch_size: int = 128, weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Fit ``surrogate`` (an assumed architecture, trained in place) on the known data ``(x, y)``.

    With ``train_fn(surrogate, x, y)`` the caller trains it; otherwise a plain Adam loop on cross-entropy
    with shuffling from ``generator``. Returns the surrogate in eval mode.
    """
    if train_fn is not None:
        train_fn(surrogate, x, y)
        return surrogate.eval()
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    surrogate.train()
    optimizer = torch.optim.Adam(surrogate.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(surrogate(x[idx]), y[idx]).backward()
            optimizer.step()
    return surrogate.eval()


@dataclass(frozen=True)
class TransferResult:
    """Adversarial examples crafted on surrogates and how they fared on the target.

    ``success``: adversarial on the target (``(N,)``); ``success_rate`` is over the samples the target
    classified correctly before the attack (``clean_correct``); ``surrogate_success_rate`` likewise on
    the surrogate ensemble (white-box success, an upper reference).
    """

    adversarial: Tensor
    success: Tensor
    clean_correct: Tensor
    success_rate: float
    surrogate_success_rate: float


def transfer_attack(
    target: nn.Module, surrogates: nn.Module | Sequence[nn.Module], inputs: Tensor, labels: Tensor,
    threat: LpThreat, *, attack: str = "mi-fgsm", targeted: bool = False,
    generator: torch.Generator | None = None, **kwargs: object,
) -> TransferResult:
    """Craft on ``surrogates`` with ``attack`` and evaluate on ``target`` (2 label queries per sample)."""
    spec = get_attack(attack)
    if spec.access not in ("white-box", "transfer"):
        raise ValueError(f"{attack!r} is a {spec.access} attack; use a white-box or transfer attack here.")
    net = as_surrogate(surrogates)
    adv = spec.fn(net, inputs, labels, threat, targeted=targeted, generator=generator, **kwargs)
    adv = threat.project(adv.detach(), inputs)  # the runner's habit: never trust the attack's box
    clean = label_with_target(target, inputs)
    after = label_with_target(target, adv)
    hit = (after == labels) if targeted else (after != labels)
    correct = (clean != labels) if targeted else (clean == labels)
    with torch.no_grad():
        surrogate_pred = net(adv).argmax(1)
    surrogate_hit = (surrogate_pred == labels) if targeted else (surrogate_pred != labels)
    base = max(int(correct.sum()), 1)
    return TransferResult(
        adversarial=adv, success=hit, clean_correct=correct,
        success_rate=float((hit & correct).sum()) / base,
        surrogate_success_rate=float((surrogate_hit & correct).sum()) / base,
    )
