"""The numbers of a poisoning cell: clean accuracy, attack success rate, detection TPR/FPR/AUC."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from bastion.data.base import Split


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) if len(x) else \
        torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, split: Split, reject: Callable[[Tensor], Tensor] | None = None) -> float:
    """Fraction classified correctly; an input the inference-time filter rejects counts as not correct."""
    if len(split) == 0:
        return float("nan")
    ok = predictions(model, split.x) == split.y
    if reject is not None:
        ok &= ~reject(split.x)
    return float(ok.float().mean())


def attack_success_rate(model: nn.Module, attacked: Split | None,
                        reject: Callable[[Tensor], Tensor] | None = None) -> float | None:
    """Fraction of the attack's test inputs classified as the attacker wants (and not rejected). None: the attack
    has no such inputs (an availability attack)."""
    if attacked is None or len(attacked) == 0:
        return None
    hit = predictions(model, attacked.x) == attacked.y
    if reject is not None:
        hit &= ~reject(attacked.x)
    return float(hit.float().mean())


def detection(scores: Tensor | None, flagged: Tensor | None, truth: Tensor) -> dict[str, float | None]:
    """TPR and FPR of ``flagged`` and the ROC AUC of ``scores`` against the poisoned-point ground truth ``truth``.
    Undefined values (no poisoned or no clean points) are None."""
    from sklearn.metrics import roc_auc_score

    truth = truth.bool()
    out: dict[str, float | None] = {"tpr": None, "fpr": None, "auc": None}
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if flagged is not None:
        flagged = flagged.bool()
        out["tpr"] = float((flagged & truth).sum()) / n_pos if n_pos else None
        out["fpr"] = float((flagged & ~truth).sum()) / n_neg if n_neg else None
    if scores is not None and n_pos and n_neg:
        out["auc"] = float(roc_auc_score(truth.numpy(), np.nan_to_num(scores.double().numpy())))
    return out


def roc_points(scores: Tensor, truth: Tensor, max_points: int = 200) -> list[tuple[float, float]]:
    """(FPR, TPR) pairs of the ROC curve, thinned to at most ``max_points`` for the report."""
    from sklearn.metrics import roc_curve

    if truth.all() or not truth.any():
        return []
    fpr, tpr, _ = roc_curve(truth.numpy(), np.nan_to_num(scores.double().numpy()))
    step = max(1, len(fpr) // max_points)
    keep = [*range(0, len(fpr), step), len(fpr) - 1]
    return [(float(fpr[i]), float(tpr[i])) for i in sorted(set(keep))]
