"""Validated configuration of an evaluation run (pydantic): bad values fail with a clear message."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EvalConfig(BaseModel):
    """One evaluation: a model, data points, a threat model and an attack.

    ``dataset`` defaults to the data set the model was trained on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "mnist-cnn"
    dataset: str | None = None
    split: Literal["train", "val", "test"] = "test"
    n: int = Field(1000, gt=0, description="number of points, taken from the start of the split")
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = 0.3
    attack: str = "pgd"
    params: dict[str, Any] = Field(default_factory=lambda: {"steps": 100})
    targeted: bool = False
    batch_size: int = Field(500, gt=0)
    seed: int = 0

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"eps must be finite and non-negative, got {v}; e.g. --eps 0.3 (L-inf), 2.0 (L2)")
        return v

    def key(self) -> str:
        """Identity of the run for resuming: same config, same key."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
