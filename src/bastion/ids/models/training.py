"""Training a detector on raw-unit flows: mini-batch Adam (Kingma & Ba, ICLR 2015, lr 1e-3 as there) on
cross-entropy, optionally class-weighted, every random draw from the caller's generator."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.ids.models.gbt import GradientBoostedDetector

log = logging.getLogger(__name__)


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """"Balanced" weights, n / (C_present * n_c) per class (scikit-learn's formula); 0 for absent classes."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    return np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)


def _checked(x: np.ndarray | Tensor, y: np.ndarray | Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    ys = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y).astype(np.int64)
    if xs.ndim != 2 or ys.shape != (len(xs),) or len(xs) == 0:
        raise InvalidInputError(f"train_detector needs rows (N, D) and N labels; got {xs.shape} and {ys.shape}.")
    if not np.isfinite(xs).all():
        raise InvalidInputError("the training rows hold NaN or infinite values; load them with nonfinite='drop'.")
    if ys.min() < 0 or ys.max() >= num_classes:
        raise InvalidInputError(f"labels must lie in [0, {num_classes}) for this detector; got {ys.min()}.."
                                f"{ys.max()} (use FlowTable.class_index()).")
    return xs, ys


def train_detector(model: nn.Module, x: np.ndarray | Tensor, y: np.ndarray | Tensor, *, epochs: int = 10,
                   batch_size: int = 256, lr: float = 1e-3, class_weight: str | None = "balanced",
                   generator: torch.Generator) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train ``model`` (a neural ``Detector`` or the gradient-boosted one) on raw rows ``x`` and class indices
    ``y``; returns it in eval mode and ``{"loss": [...], "accuracy": [...]}`` per epoch (one entry for trees)."""
    if class_weight not in ("balanced", None):
        raise InvalidInputError(f"class_weight={class_weight!r} is not 'balanced' or None; pass one of them.")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise InvalidInputError("epochs and batch_size must be at least 1 and lr positive.")
    num_classes = model.num_classes if isinstance(model, GradientBoostedDetector) else model.config["num_classes"]
    xs, ys = _checked(x, y, num_classes)
    weights = class_weights(ys, num_classes) if class_weight else np.ones(num_classes)
    if isinstance(model, GradientBoostedDetector):
        model.fit(xs, ys, sample_weight=weights[ys])
        accuracy = float((model.predict_proba(xs).argmax(1).numpy() == ys).mean())
        return model.eval(), {"loss": [], "accuracy": [accuracy]}
    return _train_neural(model, torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(weights),
                         epochs, batch_size, lr, generator)


def _train_neural(model: nn.Module, x: Tensor, y: Tensor, weights: Tensor, epochs: int, batch_size: int, lr: float,
                  generator: torch.Generator) -> tuple[nn.Module, dict[str, list[float]]]:
    dtype = next(model.body.parameters()).dtype
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for epoch in range(epochs):
        model.train()
        total, correct = 0.0, 0
        for index in torch.randperm(len(x), generator=generator).split(batch_size):
            logits = model(x[index])
            loss = loss_fn(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y[index]).sum())
        history["loss"].append(total / len(x))
        history["accuracy"].append(correct / len(x))
        log.debug("epoch %d: loss %.4f, train accuracy %.3f", epoch + 1, history["loss"][-1], history["accuracy"][-1])
    return model.eval(), history
