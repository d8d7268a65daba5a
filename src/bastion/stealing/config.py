"""The validated description of a stealing run (YAML, pydantic) and its built-in presets.

A run fixes one victim (a zoo model, a user's model file, or a URL), the victim's data set (its validation split
is the defender's own data, its test split scores the copies and plays the honest users), the thief's pool and
seed set, a query budget with its checkpoints and the thief's training recipe, and lists attacks, output
defenses and detectors. Every attack runs against every defense (``none``: the plain victim); every detector
watches every attack's queries and the honest users'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.yamlfile import parse_config, read_preset, with_quick
from bastion.yamlfile import preset_names as yaml_presets

PRESETS = Path(__file__).parent / "presets"
NONE = "none"
NOISE = "noise"


class ThiefRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "cnn"
    epochs: int = Field(10, ge=1)
    min_steps: int = Field(300, ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name


class TransferSpec(BaseModel):
    """Adversarial examples crafted on the copy (white-box) and sent to the deployed victim (the gray-box route)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    attack: str = "mi-fgsm"
    norm: str = "linf"
    eps: float = Field(0.2, gt=0)
    points: int = Field(500, ge=0)


class StealConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "steal"
    victim: str = Field("mnist-cnn", description="a zoo model, or a user model (file.py:attr, package.module:attr, "
                                                 "a TorchScript file)")
    weights: str | None = Field(None, description="the user model's weights (.safetensors or a tensors-only .pt)")
    target: str | None = Field(None, description="the URL of a deployed model; then `victim` is not loaded")
    dataset: str = Field("mnist", description="the victim's data set: validation split = the defender's data, "
                                              "test split = scoring and honest users")
    val_size: int = Field(1000, ge=10)
    test_size: int = Field(2000, ge=10)
    pool: str = Field("fashion-mnist", description="the thief's natural pool (a data set's training split) or noise")
    pool_size: int = Field(20000, ge=1)
    pool_resize: bool = Field(False, description="resize a pool of images of another size (same channels) to the "
                                                 "victim's, bilinearly (e.g. 8x8 digits against a 28x28 victim)")
    seed_size: int = Field(100, ge=1, description="unlabelled problem-domain inputs the thief starts from")
    budget: int = Field(5000, description="total queries the thief may send")
    checkpoints: list[int] = Field(default_factory=list, description="query counts at which the copy is scored")
    seed: int = 0
    thief: ThiefRecipe = Field(default_factory=ThiefRecipe)
    attacks: list[Entry]
    defenses: list[Entry] = Field(default_factory=lambda: [Entry(name=NONE)])
    detectors: list[Entry] = Field(default_factory=list)
    benign_clients: int = Field(10, ge=0, description="honest users, each sending natural test-split inputs")
    benign_queries: int = Field(500, ge=1)
    transfer: TransferSpec = Field(default_factory=TransferSpec)

    @model_validator(mode="after")
    def _check(self) -> StealConfig:
        if self.budget < 1:
            raise ValueError(f"a query budget of {self.budget} allows no query; give a budget of at least 1")
        bad = [c for c in self.checkpoints if not 0 < c <= self.budget]
        if bad:
            raise ValueError(f"checkpoint {bad[0]} is outside (0, budget={self.budget}]; list query counts up to "
                             "the budget")
        if not self.attacks:
            raise ValueError("the run needs at least one attack (see `bastion steal list`)")
        for kind, entries in (("attack", self.attacks), ("defense", self.defenses), ("detector", self.detectors)):
            keys = [e.key for e in entries]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{kind} {dup[0]!r} appears twice; give one of them a distinct `label`")
        if self.target and any(d.name != NONE for d in self.defenses):
            raise ValueError("a remote target answers with whatever defense its server runs; list only the defense "
                             "`none` with `target`")
        return self

    @property
    def budget_points(self) -> list[int]:
        """The checkpoints, sorted, always ending at the budget."""
        return sorted({*self.checkpoints, self.budget})


def check_names(config: StealConfig) -> None:
    """Every algorithm name and parameter known (one clear error otherwise)."""
    from bastion.registry import check_params
    from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, STEAL_ATTACKS, load_algorithms

    load_algorithms()
    for kind, registry, entries in (("extraction attack", STEAL_ATTACKS, config.attacks),
                                    ("output defense", OUTPUT_DEFENSES, config.defenses),
                                    ("extraction detector", DETECTORS, config.detectors)):
        for e in entries:
            if e.name != NONE:
                check_params(kind, e.name, e.params, registry.get(e.name).defaults)


def preset_names() -> list[str]:
    return yaml_presets(PRESETS)


def load_steal(source: str | Path, *, quick: bool = False) -> StealConfig:
    """A YAML file or a built-in preset (``mnist``, ``mnist-full``); ``quick`` applies its ``quick:`` overrides."""
    data, path = read_preset(source, PRESETS, "stealing run (docs/STEALING.md)", "bastion steal run")
    data = with_quick(data, quick, "steal")
    return parse_steal(data, str(path))


def parse_steal(data: dict[str, Any], where: str = "the stealing run") -> StealConfig:
    return parse_config(StealConfig, data, where, "stealing run")
