"""The validated description of a poisoning matrix (YAML, pydantic) and its built-in presets.

A matrix fixes one data set (and how much of it the victim trains on), the victim's training recipe, the poison
rate and target class, and lists attacks and defenses; every attack is crossed with every defense. ``none`` as an
attack is the clean training set (0% poison); ``none`` as a defense is the undefended model. An entry may override
the matrix's rate/target and pass ``params`` to its algorithm (checked against the algorithm's signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.errors import InvalidInputError
from bastion.yamlfile import parse_config, read_preset, with_quick
from bastion.yamlfile import preset_names as yaml_presets

PRESETS = Path(__file__).parent / "presets"
NONE = "none"


class RecipeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str = "cnn"
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)


class AttackEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    label: str | None = None
    rate: float | None = Field(None, description="poison rate, a fraction of the training set in (0, 1]")
    target: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name


class DefenseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_test_data(self) -> DefenseEntry:
        asks = [k for k, v in self.params.items() if "test" in k.lower() or (isinstance(v, str) and v.lower() in
                                                                             ("test", "test-set", "test_set"))]
        if asks:
            raise ValueError(f"defense {self.key!r}: {asks[0]!r} asks for test data, which a defender never has; "
                             "defenses are tuned on the clean validation set only (set its size with val_size)")
        return self

    @property
    def key(self) -> str:
        return self.label or self.name


class PoisonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "poison"
    dataset: str = "mnist"
    train_size: int | None = Field(None, ge=10, description="the victim trains on the first N training points")
    val_size: int = Field(1000, ge=10, description="the defender's small clean validation set")
    test_size: int | None = Field(None, ge=10, description="test points (first N of the test split)")
    seed: int = 0
    rate: float = 0.05
    target: int = 0
    recipe: RecipeSpec = Field(default_factory=RecipeSpec)
    attacks: list[AttackEntry]
    defenses: list[DefenseEntry] = Field(default_factory=lambda: [DefenseEntry(name=NONE)])

    @model_validator(mode="after")
    def _check(self) -> PoisonConfig:
        _check_rate(self.rate, "the matrix")
        for a in self.attacks:
            if a.rate is not None:
                _check_rate(a.rate, f"attack {a.key!r}")
        for kind, entries in (("attack", self.attacks), ("defense", self.defenses)):
            keys = [e.key for e in entries]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{kind} {dup[0]!r} appears twice; give one of them a distinct `label`")
        if not self.attacks:
            raise ValueError("the matrix needs at least one attack (`none` is the clean training set)")
        return self

    def attack(self, key: str) -> AttackEntry:
        return next(a for a in self.attacks if a.key == key)

    def defense(self, key: str) -> DefenseEntry:
        return next(d for d in self.defenses if d.key == key)


def _check_rate(rate: float, where: str) -> None:
    if not 0 < rate <= 1:
        raise ValueError(f"{where}: poison rate {rate} is outside (0, 1]; give a fraction such as 0.05 "
                         "(use the attack `none` for a clean training set)")


def check_names(config: PoisonConfig, num_classes: int) -> None:
    """Every algorithm name and parameter known, every target class in range (one clear error otherwise)."""
    from bastion.poisoning import POISON_ATTACKS, POISON_DEFENSES
    from bastion.poisoning.base import check_params

    for a in config.attacks:
        target = config.target if a.target is None else a.target
        if not 0 <= target < num_classes:
            raise InvalidInputError(f"attack {a.key!r}: target class {target} is out of range; "
                                    f"{config.dataset} has classes 0 to {num_classes - 1}.")
        if a.name != NONE:
            check_params("poisoning attack", a.name, a.params, POISON_ATTACKS.get(a.name).defaults)
    for d in config.defenses:
        if d.name != NONE:
            check_params("poisoning defense", d.name, d.params, POISON_DEFENSES.get(d.name).defaults)


def preset_names() -> list[str]:
    return yaml_presets(PRESETS)


def load_poison(source: str | Path, *, quick: bool = False) -> PoisonConfig:
    """A YAML file or a built-in preset (``mnist``, ``fashion-mnist``); ``quick`` applies its ``quick:`` overrides."""
    data, path = read_preset(source, PRESETS, "poisoning matrix (docs/POISONING.md)", "bastion poison run")
    data = with_quick(data, quick, "poison")
    return parse_poison(data, str(path))


def parse_poison(data: dict[str, Any], where: str = "the poisoning matrix") -> PoisonConfig:
    return parse_config(PoisonConfig, data, where, "poisoning matrix")
