"""What an evaluation runs on: the model, the points, the threat and the configuration, resolved."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bastion.data.base import Split
from bastion.evaluation.config import EvalConfig
from bastion.threat import LpThreat


@dataclass(frozen=True)
class Setup:
    """Built by ``evaluation.job.prepare`` from names and files, or by ``bastion.evaluate`` from objects."""

    model: nn.Module
    points: Split
    threat: LpThreat
    config: EvalConfig
    num_classes: int
    note: str = ""  # what was inferred about a user's data (printed by the CLI)
