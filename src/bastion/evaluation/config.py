"""Validated configuration of an evaluation run (pydantic): bad values fail with a clear message."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TargetChoice = Literal["random", "least-likely"]  # how a targeted run picks each point's target class


_ADDED_NONE = ("weights", "data", "label_column", "lower", "upper", "threat")


class EvalConfig(BaseModel):
    """One evaluation: a model, data points, a threat model, and either the standard suite or one attack.

    ``dataset`` defaults to the data set the model was trained on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "mnist-cnn"
    weights: str | None = Field(None, description="weights for a model given as code (file.py:attr, pkg.mod:attr)")
    dataset: str | None = None
    data: str | None = Field(None, description="a user's data file or folder (.npz, .pt, .csv, image folder) "
                                               "instead of a registered data set")
    label_column: str | None = Field(None, description="CSV data: the label column (default: label/class/target/y)")
    lower: float | None = Field(None, description="override the inferred lower bound of user data")
    upper: float | None = Field(None, description="override the inferred upper bound of user data")
    threat: dict[str, Any] | None = Field(None, description="the threat's to_dict() where norm and eps do not say "
                                                            "it all (per-feature bounds, a mask, other kinds)")
    split: Literal["train", "val", "test"] = "test"
    n: int = Field(1000, gt=0, description="number of points, taken from the split starting at offset")
    offset: int = Field(0, ge=0, description="index of the first point (sweeps shard a split this way)")
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = 0.3
    suite: Literal["fast", "standard", "thorough"] | None = "standard"
    attack: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    eot_samples: int = Field(20, gt=0, description="draws per gradient when the model is randomized")
    max_queries: int | None = Field(None, gt=0, description="hard per-point query budget (black-box attacks)")
    targeted: bool = Field(False, description="single attacks only: push each point to a target class (see "
                                              "targets) instead of to any wrong class")
    targets: TargetChoice = Field("random", description="how targeted runs pick each point's "
                                                                          "target class")
    batch_size: int = Field(500, gt=0)
    seed: int = 0
    adaptive: bool = Field(True, description="False: attack the model as it is (no EOT/BPDA/log-probabilities), "
                                             "the number a naive evaluation reports")
    outcome_checks: bool = Field(True, description="False: skip the attack-based outcome diagnostics (single-step vs "
                                                   "iterative, eps monotonicity, box-covering eps)")

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"eps must be finite and non-negative, got {v}; e.g. --eps 0.3 (L-inf), 2.0 (L2)")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> EvalConfig:
        if (self.suite is None) == (self.attack is None):
            raise ValueError("give either a suite (fast, standard, thorough) or a single attack, not both")
        if self.targeted and self.suite is not None:
            raise ValueError("the suites measure untargeted robustness; a targeted run takes one attack "
                             "(bastion attack NAME --targeted)")
        return self

    @property
    def done_part(self) -> str:
        """The store part that marks a batch as finished."""
        return self.attack if self.attack is not None else "worst"

    def key(self) -> str:
        """Identity of the run for resuming: same config, same key."""
        fields = self.model_dump(mode="json")
        for name in ("adaptive", "outcome_checks"):  # runs stored before these fields existed keep their key
            if fields[name]:
                fields.pop(name)
        for name in _ADDED_NONE:  # likewise for fields added later, while they are unset
            if fields[name] is None:
                fields.pop(name)
        if not self.targeted:  # the same for the target choice, which only targeted runs use
            fields.pop("targets")
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
