"""What an evaluation runs on: the model, the points, the threat and the configuration, resolved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from bastion.data.base import Dataset, Split
from bastion.errors import InvalidInputError
from bastion.evaluation.config import EvalConfig
from bastion.threat import LpThreat


def check_fits(name: str, meta: Any, data: Dataset) -> None:
    """A named model's recorded input shape against the data set's: one line naming the fix when they differ."""
    if tuple(data.spec.shape) != tuple(meta.input_shape):
        raise InvalidInputError(
            f"Model {name!r} takes inputs of shape {tuple(meta.input_shape)} but {data.spec.name!r} has "
            f"{tuple(data.spec.shape)}; pick the data set the model was trained on ({meta.dataset!r})."
        )


@dataclass(frozen=True)
class Setup:
    """Built by ``evaluation.job.prepare`` from names and files, or by ``bastion.evaluate`` from objects."""

    model: nn.Module
    points: Split
    threat: LpThreat
    config: EvalConfig
    num_classes: int
    note: str = ""  # what was inferred about a user's data (printed by the CLI)
