"""Pieces the training-set detectors share: the received model's representations, one class at a time, parameter
checks, and retraining without the flagged points. Registers nothing."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView
from bastion.poisoning.features import penultimate


def received_model(view: DefenderView, defense: str) -> nn.Module:
    """The model trained on the received set; one clear error for a view without one."""
    if view.model is None:
        raise InvalidInputError(f"{defense} needs the model trained on the received set (DefenderView.model); "
                                "pass a view with a trained model.")
    return view.model


def representations(view: DefenderView, x: Tensor, defense: str) -> Tensor:
    """Penultimate representations of ``x`` under the received model, in float64 for the linear algebra."""
    return penultimate(received_model(view, defense), x).double()


def classes(y: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(class, indices of its points) for every class present in ``y``."""
    for c in torch.unique(y).tolist():
        yield int(c), torch.nonzero(y == c).flatten()


def check_range(defense: str, name: str, value: float, low: float, high: float, *, low_open: bool = True,
                high_open: bool = False) -> None:
    """``value`` in the interval between ``low`` and ``high`` (open or closed ends), else one clear error."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidInputError(f"{defense}: {name}={value} is out of range; use a value in {interval}.")


def retrain_without(view: DefenderView, flagged: Tensor, defense: str) -> nn.Module:
    """A fresh model trained by the pipeline's recipe on the received set minus the flagged points. Nothing flagged:
    the received model, which the same recipe trained on the same set."""
    if not flagged.any():
        return received_model(view, defense)
    keep = ~flagged
    if not keep.any():
        raise InvalidInputError("The defense flagged every training point; loosen its parameters.")
    return view.fit(Split(view.train.x[keep], view.train.y[keep]))
