"""A gradient-boosted tree baseline: scikit-learn's HistGradientBoostingClassifier on raw flow features.

Histogram gradient boosting (Friedman, "Greedy function approximation: a gradient boosting machine", Annals of
Statistics 2001; binned as in LightGBM, Ke et al., NeurIPS 2017); the defaults are scikit-learn's (100 iterations,
learning rate 0.1, 31 leaves). Trees are invariant to monotone feature scaling, so it reads raw units directly.

It has no gradients: attacks query it as a black box. ``forward`` answers log-probabilities (softmax of them gives
back the probabilities) for a batch of raw rows, computed without autograd; a gradient attack on it fails loudly
rather than getting zeros. It is retrained from its seed, not saved: scikit-learn has no format for it other than
pickle, which bastion never loads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.ids.models.base import register_detector


class GradientBoostedDetector(nn.Module):
    """Black-box detector: ``fit(x, y, sample_weight)`` then ``predict_proba(x)`` / ``forward(x)``."""

    def __init__(self, num_classes: int, *, random_state: int, max_iter: int = 100, learning_rate: float = 0.1,
                 max_leaf_nodes: int = 31) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.params: dict[str, Any] = {"max_iter": max_iter, "learning_rate": learning_rate,
                                       "max_leaf_nodes": max_leaf_nodes, "random_state": random_state}
        self.trees: HistGradientBoostingClassifier | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> GradientBoostedDetector:
        self.trees = HistGradientBoostingClassifier(**self.params).fit(x, y, sample_weight=sample_weight)
        return self

    def predict_proba(self, x: np.ndarray | Tensor) -> Tensor:
        """Class probabilities ``(N, num_classes)`` (float64) for raw rows; classes absent from training get 0."""
        if self.trees is None:
            raise InvalidInputError("the gradient-boosted detector is not trained; call train_detector first.")
        rows = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
        out = np.zeros((len(rows), self.num_classes))
        out[:, self.trees.classes_.astype(int)] = self.trees.predict_proba(rows)
        return torch.from_numpy(out)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.predict_proba(x).clamp_min(1e-12).log().to(torch.float32)


@register_detector("gbt", "Histogram gradient-boosted trees (scikit-learn defaults); a black box, no gradients.",
                   "Friedman 2001; Ke et al. 2017", differentiable=False)
def gbt(in_features: int, num_classes: int, *, generator: torch.Generator, max_iter: int = 100,
        learning_rate: float = 0.1, max_leaf_nodes: int = 31) -> nn.Module:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return GradientBoostedDetector(num_classes, random_state=seed, max_iter=max_iter, learning_rate=learning_rate,
                                   max_leaf_nodes=max_leaf_nodes)
