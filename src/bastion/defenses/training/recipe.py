"""The training recipe: everything a run needs, as YAML validated by pydantic.

Example (``docs/recipes/mnist-fast-at.yaml``)::

    defense: fast-at
    dataset: mnist
    eps: 0.3
    epochs: 5
    lr: 0.005
    lr_schedule: cyclic
    method: {guard: none}
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.errors import InvalidInputError
from bastion.yamlfile import read_yaml_mapping


class Recipe(BaseModel):
    """One adversarial-training run. ``method`` holds the step function's keyword hyperparameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    defense: Literal["pgd-at", "fast-at", "trades", "mart", "awp"]
    dataset: str = "mnist"
    arch: str = "cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(0.3, gt=0)
    method: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    train_subset: int | None = Field(None, ge=1, description="train on the first N training points only")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cyclic", "piecewise"] = "cyclic"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["fixed", "auto"] = "fixed"
    eps_warmup_epochs: float = Field(0.0, ge=0, description="fixed schedule: linear eps ramp over these epochs")
    val_size: int = Field(1000, ge=1)
    val_steps: int = Field(10, ge=1, description="PGD steps of the robust validation attack")
    check_every: int = Field(0, ge=0, description="batches between collapse checks (0: once per epoch)")
    check_size: int = Field(256, ge=1)
    collapse_drop: float = Field(0.2, gt=0, le=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    swa_start: int | None = Field(None, ge=0, description="SWA: average the weights of every epoch from this one "
                                                         "on (counted from 0), with equal weights")
    swa_lr: float | None = Field(None, gt=0, description="SWA: constant learning rate from swa_start on")
    patience: int | None = Field(None, ge=1, description="early stopping on robust validation accuracy")
    test_size: int = Field(1000, ge=1, description="test points for the final PGD robust accuracy")
    seed: int = 0

    @model_validator(mode="after")
    def _method_keys(self) -> Recipe:
        from bastion.defenses.training import METHODS

        params = inspect.signature(METHODS.get(self.defense).step).parameters
        allowed = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(self.method) - allowed)
        if unknown:
            raise ValueError(f"method options {unknown} are not hyperparameters of {self.defense}; "
                             f"allowed: {sorted(allowed)}")
        return self

    @model_validator(mode="after")
    def _one_average(self) -> Recipe:
        if self.ema_decay is not None and self.swa_start is not None:
            raise ValueError(f"ema_decay ({self.ema_decay}) and swa_start ({self.swa_start}) are both set; "
                             "choose one weight average: EMA (ema_decay) or SWA (swa_start)")
        if self.swa_lr is not None and self.swa_start is None:
            raise ValueError("swa_lr needs swa_start (the epoch from which the weights are averaged)")
        if self.swa_start is not None and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start ({self.swa_start}) must be below epochs ({self.epochs}): "
                             "the average takes the weights at the end of epochs swa_start .. epochs - 1")
        return self


def load_recipe(path: str | Path, **overrides: Any) -> Recipe:
    """Read a YAML recipe; ``overrides`` (e.g. from the command line) replace its fields."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"Recipe {p} not found; pass a YAML file such as docs/recipes/mnist-fast-at.yaml.")
    data = read_yaml_mapping(p, "training recipe (docs/TRAINING.md)")
    return Recipe.model_validate(data | {k: v for k, v in overrides.items() if v is not None})
