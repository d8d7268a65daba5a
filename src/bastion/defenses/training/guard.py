"""Robust validation and the catastrophic-overfitting detector.

Wong, Rice & Kolter 2020 stop fast adversarial training when PGD accuracy on a held-out batch drops by
more than 0.2 (absolute) from the previous check and keep the weights from before the drop. Rice, Wong &
Kolter 2020 ("Overfitting in adversarially robust deep learning", ICML) show that robust test accuracy
peaks and then falls (robust overfitting) and select the epoch with the best robust *validation* accuracy.
Both use ``robust_accuracy`` below; success is decided by bastion's runner, not by the attack.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat

COLLAPSE_DROP = 0.2  # Wong et al. 2020


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, *, steps: int = 10,
                    seed: int = 0) -> tuple[float, float]:
    """(clean accuracy, PGD robust accuracy) of ``model`` on ``(x, y)``; a fixed seed makes checks comparable."""
    was = model.training
    model.eval()
    try:
        result = run_attack(model, x, y, threat, "pgd", steps=steps, generator=torch.Generator().manual_seed(seed))
    finally:
        model.train(was)
    return result.clean_accuracy, result.robust_accuracy


@dataclass
class CollapseGuard:
    """Keeps the last good weights; ``check`` says whether robust accuracy collapsed since the best check.

    A collapse is robust accuracy more than ``drop`` below its best while clean accuracy has not fallen by
    more than ``drop / 2`` from its value at that best: the signature of catastrophic overfitting (a model
    that is merely still learning, e.g. leaving the constant predictor of the first batches, loses both).
    """

    drop: float = COLLAPSE_DROP
    best: float = -1.0
    best_clean: float = 0.0
    good_state: dict[str, Any] | None = None
    history: list[float] = field(default_factory=list)

    def check(self, model: nn.Module, robust: float, clean: float = 1.0) -> bool:
        """Record a check; on a collapse return True (weights not changed: call ``rollback``)."""
        self.history.append(robust)
        if self.best >= 0 and robust < self.best - self.drop and clean >= self.best_clean - self.drop / 2:
            return True
        if robust >= self.best:
            self.best, self.best_clean = robust, clean
        self.good_state = copy.deepcopy(model.state_dict())
        return False

    def rollback(self, model: nn.Module) -> None:
        if self.good_state is not None:
            model.load_state_dict(self.good_state)

    def state(self) -> dict[str, Any]:
        return {"drop": self.drop, "best": self.best, "best_clean": self.best_clean, "good_state": self.good_state,
                "history": list(self.history)}

    @staticmethod
    def from_state(state: dict[str, Any]) -> CollapseGuard:
        return CollapseGuard(state["drop"], state["best"], state["best_clean"], state["good_state"],
                             list(state["history"]))
