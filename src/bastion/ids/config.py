"""The validated description of an IDS evaluation (YAML, pydantic) and its built-in presets.

An evaluation fixes the flows (bastion's shipped snapshot by default, or a CSV in any format
``bastion.ids.loaders`` reads), how they are split (stratified, seeded), the detectors to train, the threat (an Lp
budget in the scaled space plus the flow constraints: derived for the CIC layout, or a constraint file) and the
evasion attacks. Every attack runs against every detector on the test split's attack flows that the detector
catches; success means the detector then calls the flow benign, and every adversarial flow is checked against every
constraint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.yamlfile import parse_config, read_preset, with_quick
from bastion.yamlfile import preset_names as yaml_presets

PRESETS = Path(__file__).parent / "presets"
SNAPSHOT = "snapshot"


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name


class Adversarial(BaseModel):
    """Adversarial training of a neural detector (``bastion.ids.robust``): ``khamis`` (unconstrained multi-step
    FGSM on the scaled vector, every attack row) or ``capgd`` (valid CAPGD flows for half of each batch's attack
    rows); ``ratio`` and ``eps`` default to the method's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["khamis", "capgd"] = "capgd"
    ratio: float | None = Field(None, ge=0, le=1)
    eps: float | None = Field(None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class Detector(Entry):
    """A detector: an architecture (``bastion ids list``), how it is trained, and an inference defense around it."""

    adversarial: Adversarial | None = None
    defense: str | None = Field(None, description="an inference defense around the trained detector (bastion ids "
                                                  "list): constraint_gate, feature_squeezing")
    defense_params: dict[str, Any] = Field(default_factory=dict)


class Training(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)


class IdsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "ids"
    data: str = Field(SNAPSHOT, description="'snapshot' (bastion's generated flows) or a CSV file of flows")
    format: str = Field("auto", description="the CSV's format (auto, bastion, cic2017, cic2018, nsl-kdd, unsw-nb15)")
    nonfinite: Literal["error", "drop", "zero"] = "error"
    extra: Literal["error", "drop"] = Field("error", description="columns outside bastion's CIC layout (a full "
                                                                  "CIC file has 78+): error, or drop them")
    test_fraction: float = Field(0.3, gt=0, lt=1)
    max_train: int = Field(20000, ge=10, description="at most this many training flows (stratified subsample)")
    labels: Literal["binary", "multiclass"] = Field("binary", description="benign vs attack, or one class per attack")
    seed: int = 0
    detectors: list[Detector] = Field(default_factory=lambda: [Detector(name="mlp")])
    training: Training = Field(default_factory=Training)
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(0.1, gt=0, description="the budget in the scaled space (a feature's range is 1)")
    constraints: str | None = Field(None, description="a constraint file (docs/IDS.md); default: the CIC relations")
    attacks: list[Entry]
    per_class: int = Field(100, ge=1, description="attack flows attacked per class (the detected ones among them)")

    @model_validator(mode="after")
    def _check(self) -> IdsConfig:
        if not self.attacks:
            raise ValueError("the evaluation needs at least one attack (see `bastion ids list`)")
        if not self.detectors:
            raise ValueError("the evaluation needs at least one detector (see `bastion ids list`)")
        for kind, entries in (("attack", self.attacks), ("detector", self.detectors)):
            keys = [e.key for e in entries]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{kind} {dup[0]!r} appears twice; give one of them a distinct `label`")
        return self


def preset_names() -> list[str]:
    return yaml_presets(PRESETS)


def load_ids(source: str | Path, *, quick: bool = False) -> IdsConfig:
    """A YAML file or a built-in preset (``snapshot``); ``quick`` applies its ``quick:`` overrides."""
    data, path = read_preset(source, PRESETS, "IDS evaluation (docs/IDS.md)", "bastion ids evaluate")
    data = with_quick(data, quick, "ids")
    return parse_ids(data, str(path))


def parse_ids(data: dict[str, Any], where: str = "the IDS evaluation") -> IdsConfig:
    return parse_config(IdsConfig, data, where, "IDS evaluation")
