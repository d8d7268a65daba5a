"""The validated description of a defense comparison (YAML, pydantic), and the built-in presets.

A comparison fixes one data set, one base architecture, one training budget, the threat model the defenses
are trained for, the threat models they were *not* trained for (generalization), and the list of defenses.
Every defense is described by a ``method`` (how it is obtained) and optional ``params``:

* ``standard``: ordinary training (the baseline every cost is a multiple of);
* ``pgd-at``, ``fast-at``, ``trades``, ``mart``, ``awp``: adversarial training (``bastion.defenses.training``);
* ``ibp``, ``crown-ibp``: certified training; ``smoothing``: Gaussian-noise training deployed as a noisy
  classifier (randomized smoothing, Cohen et al. 2019) and certified with ``bastion.certification``;
* any inference-time defense of ``bastion defend list`` (``jpeg``, ``feature-squeezing-detector``,
  ``distillation``, ``diffpure``, ``dynamic-ensemble``, ``ensemble-average``, ``pipeline`` ...), built around
  the defense named by ``base`` (default ``standard``); ensembles take ``seeds`` (more standard models
  trained with other seeds) and/or ``members`` (other trained defenses of the comparison).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import InvalidInputError, config_errors
from bastion.yamlfile import preset_names as yaml_presets
from bastion.yamlfile import read_preset

PRESETS = Path(__file__).parent / "presets"
TRAINED = ("standard", "pgd-at", "fast-at", "trades", "mart", "awp")
CERTIFIED = ("ibp", "crown-ibp", "smoothing")


class ThreatSpec(BaseModel):
    """A threat model; with ``attack`` it is one black-box attack (e.g. Square) instead of the white-box suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    norm: Literal["linf", "l2", "l1"]
    eps: float = Field(gt=0)
    attack: str | None = None
    max_queries: int | None = Field(None, gt=0)

    def label(self) -> str:
        base = f"{self.norm} {self.eps:g}"
        return f"{self.attack} {base}" if self.attack else base


class TrainBudget(BaseModel):
    """Training settings shared by every trained defense, so their costs compare."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int = Field(5, ge=1)
    train_subset: int | None = Field(None, ge=1, description="train on the first N training points only")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)


class EvalBudget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(500, gt=0, description="test points, from the start of the test split")
    suite: Literal["fast", "standard", "thorough"] = "standard"
    eot_samples: int = Field(20, gt=0)
    batch_size: int = Field(500, gt=0)
    latency_points: int = Field(100, gt=0, description="batch size of the latency measurement")


class CertifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    norm: Literal["linf", "l2"]
    eps: float = Field(gt=0)
    n: int | None = Field(None, gt=0, description="points (default: the evaluation's n)")
    samples: int = Field(1000, gt=0, description="smoothing: Monte-Carlo draws per point")


class DefenseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    base: str | None = None
    seeds: int = Field(0, ge=0, description="ensembles: extra standard models trained with other seeds")
    members: list[str] = Field(default_factory=list, description="ensembles: other defenses of the comparison")
    n: int | None = Field(None, gt=0, description="fewer test points for expensive defenses (e.g. diffpure)")
    eot_samples: int | None = Field(None, gt=0, description="fewer EOT draws for expensive randomized defenses")
    generalization: bool = Field(True, description="False: evaluate at the trained-for threat only")
    certify: CertifySpec | None = None

    @property
    def kind(self) -> str:
        if self.method in TRAINED:
            return "trained"
        if self.method in CERTIFIED:
            return "certified"
        return "inference"


class CompareConfig(BaseModel):
    """One comparison (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    dataset: str = "mnist"
    arch: str = "crown-cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    train: TrainBudget = Field(default_factory=TrainBudget)
    eval: EvalBudget = Field(default_factory=EvalBudget)
    threat: ThreatSpec
    generalization: list[ThreatSpec] = Field(default_factory=list)
    curve: list[float] = Field(default_factory=list, description="extra eps of the main norm for the eps plot")
    defenses: list[DefenseEntry]

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        names = [d.name for d in self.defenses]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"defense names must be unique; repeated: {dupes}")
        if "standard" not in {d.method for d in self.defenses}:
            raise ValueError("add a defense with method: standard -- it is the baseline every cost is measured "
                             "against")
        for d in self.defenses:
            for ref in [d.base, *d.members]:
                if ref is not None and ref not in names:
                    raise ValueError(f"defense {d.name!r} refers to {ref!r}, which is not in the comparison "
                                     f"({', '.join(names)})")
            _check_method(d)
        return self

    def entry(self, name: str) -> DefenseEntry:
        return next(d for d in self.defenses if d.name == name)

    def baseline(self) -> DefenseEntry:
        return next(d for d in self.defenses if d.method == "standard")


def _check_method(d: DefenseEntry) -> None:
    if d.kind != "inference":
        return
    from bastion.defenses.inference import DEFENSES

    if d.method not in DEFENSES:
        known = ", ".join([*TRAINED, *CERTIFIED, *DEFENSES.names()])
        raise ValueError(f"defense {d.name!r}: unknown method {d.method!r}; use one of {known}")


def spec_hash(*parts: Any) -> str:
    """A short content hash: a built artifact's file name carries it, so a changed spec never reuses it."""
    blob = json.dumps([p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def preset_names() -> list[str]:
    return yaml_presets(PRESETS)


def load_compare(source: str | Path, *, quick: bool = False) -> CompareConfig:
    """A YAML file, or the name of a built-in preset (``mnist``, ``fashion-mnist``); ``quick`` applies the
    preset's ``-quick`` overrides (or, for a file, its top-level ``quick:`` mapping)."""
    data, path = read_preset(source, PRESETS, "comparison (docs/COMPARE.md)", "bastion compare")
    overrides = data.pop("quick", None) or {}
    if quick:
        data = _merge(data, overrides)
        data["name"] = f"{data.get('name', 'compare')}-quick"
    try:
        return CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{path}: invalid comparison: {config_errors(exc)}") from None
    except ValueError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merge; a ``defenses`` override maps defense name -> fields to replace."""
    out = dict(base)
    for key, value in over.items():
        if key == "defenses" and isinstance(value, dict):
            out["defenses"] = [d | value.get(d["name"], {}) for d in base.get("defenses", [])]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value)
        else:
            out[key] = value
    return out
