"""Spectral signatures (Tran, Li & Madry 2018, "Spectral Signatures in Backdoor Attacks", NeurIPS).

Per class, the received model's penultimate representations are centred; the score of a point is its squared
projection on the top right singular vector of the centred matrix; the ``1.5 * eps`` fraction of top-scored points
of *every* class is removed and the model retrained (the paper's Algorithm 1: remove the top 1.5 eps scores of
each label, eps an upper bound on the poisoned examples).

``eps`` is the defender's upper bound on the poisoned fraction of a class (the paper poisons 5% or 10% of the
target label and sets eps to it; default 0.05, the paper's smaller setting). It is an assumption, not the true
rate: an all-to-one attack poisoning 5% of a 10-class set makes about a third of the target class poisoned, so a
defender expecting that sets eps near 1/3. By design the method removes ``ceil(1.5 * eps * n_c)`` points of every
class, poisoned or not: on a clean set that is ~1.5 eps of the data, all false positives.

Measured on BadNets at 5% of the 6,000-point MNIST set of the tests (2-epoch CNN, 128-wide penultimate): the poison
is only weakly aligned with class 0's top singular vector (AUC 0.71 within the class, 0.62 over all points), but
the 67 points removed from class 0 at eps=0.05 are all poison (TPR 0.22, FPR 0.068); the backdoor survives the
retraining (ASR 0.997), and at eps=1/3 too (TPR 0.68, FPR 0.49, ASR 0.95). SPECTRE's robust whitening fixes this.

Scores are comparable within a class only; for a cross-class ranking each class's scores are divided by their
median (``info["scaled"]``), which leaves each class's order unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.poisoning.base import DefenderView, DefenseResult, register_poison_defense
from bastion.poisoning.defenses._detection import check_range, classes, representations, retrain_without

NAME = "spectral-signatures"


def spectral_scores(reps: Tensor) -> Tensor:
    """Squared projection of the centred rows of ``reps`` on their top right singular vector."""
    centred = reps - reps.mean(0)
    if len(centred) < 2:
        return torch.zeros(len(centred), dtype=reps.dtype)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return (centred @ top) ** 2


@register_poison_defense(NAME, stage="detect", paper="Tran, Li & Madry 2018")
def spectral_signatures(view: DefenderView, *, eps: float = 0.05) -> DefenseResult:
    """Remove the ``1.5 * eps`` top spectral scores of each class, retrain on the rest."""
    check_range(NAME, "eps", eps, 0.0, 0.5)
    reps = representations(view, view.train.x, NAME)
    scores = torch.zeros(len(view.train), dtype=torch.float64)
    flagged = torch.zeros(len(view.train), dtype=torch.bool)
    removed: dict[int, int] = {}
    for c, idx in classes(view.train.y):
        s = spectral_scores(reps[idx])
        scores[idx] = s / s.median().clamp_min(1e-12)
        k = min(len(idx) - 1, math.ceil(1.5 * eps * len(idx)))
        flagged[idx[s.argsort(descending=True)[:k]]] = True
        removed[c] = k
    return DefenseResult(model=retrain_without(view, flagged, NAME), scores=scores.float(), flagged=flagged,
                         info={"eps": eps, "removed_per_class": removed, "scaled": "per-class median"})
