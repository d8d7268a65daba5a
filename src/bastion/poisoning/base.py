"""What a poisoning attack and a poisoning defense receive and return, and their registries.

An attack sees an :class:`AttackerView` (the clean training set it corrupts, the test set it may pick victims
from, a poison rate, a target class, a seeded generator and a clean surrogate model of its own) and returns a
:class:`PoisonedSet`: the training set the victim will train on, which points were poisoned (the ground truth
for detection metrics, never shown to a defense), and how to test the attack (a trigger to stamp on test inputs,
fixed victim inputs, or a source class).

A defense sees a :class:`DefenderView` only: the training set as received (poisoned or not, without the ground
truth), a small clean validation set, the model trained on the received set, and the pipeline's training recipe.
It never receives the test set or the attack's ground truth (``tests/poisoning/test_contract.py`` checks this
for every registered defense). It returns a :class:`DefenseResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.data.base import DatasetSpec, Split
from bastion.errors import InvalidInputError
from bastion.registry import Registry, check_params, keyword_defaults  # noqa: F401 (check_params re-exported)

AttackKind = Literal["availability", "dirty-label", "backdoor", "clean-label"]
DefenseStage = Literal["detect", "train", "repair", "filter"]


@dataclass(frozen=True)
class AttackerView:
    """What the attacker has. ``surrogate()`` returns the attacker's own clean model (trained on ``train`` on first
    call, then cached); attacks that do not need one never pay for it."""

    train: Split
    test: Split
    spec: DatasetSpec
    rate: float
    target: int
    generator: torch.Generator
    surrogate: Callable[[], nn.Module]

    def n_poison(self) -> int:
        """How many training points the rate allows (at least one)."""
        return max(1, round(self.rate * len(self.train)))

    def pick(self, candidates: Tensor, n: int | None = None) -> Tensor:
        """``n`` (default :meth:`n_poison`) indices drawn without replacement from the index tensor ``candidates``."""
        n = self.n_poison() if n is None else n
        if n > len(candidates):
            raise InvalidInputError(
                f"The attack needs {n} candidate training points but only {len(candidates)} qualify; "
                "lower the poison rate.")
        return candidates[torch.randperm(len(candidates), generator=self.generator)[:n]]


@dataclass
class PoisonedSet:
    """The poisoned training set, its ground truth, and how the attack is tested.

    Exactly one way of testing applies: ``trigger`` (a backdoor: stamped on test points not of ``target``, the
    attack succeeds when they are classified as ``target``), ``victims`` (targeted attacks on chosen test inputs:
    inputs and the labels the attacker wants), or ``source`` (class-targeted label flipping: test points of
    ``source`` classified as ``target``). None of them: an availability attack, measured by clean accuracy alone.
    """

    train: Split
    poisoned: Tensor  # bool, one per training point
    target: int | None = None
    trigger: Callable[[Tensor], Tensor] | None = None
    victims: Split | None = None
    source: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.poisoned.dtype != torch.bool or self.poisoned.shape != (len(self.train),):
            raise ValueError("PoisonedSet.poisoned must be a bool tensor with one entry per training point")

    def attack_test(self, test: Split) -> Split | None:
        """The inputs on which the attack is measured and the labels the attacker wants for them."""
        if self.victims is not None:
            return self.victims
        if self.target is None:
            return None
        if self.trigger is not None:
            keep = test.y != self.target
            x = self.trigger(test.x[keep])
        elif self.source is not None:
            x = test.x[test.y == self.source]
        else:
            return None
        return Split(x, torch.full((len(x),), self.target, dtype=test.y.dtype))


@dataclass(frozen=True)
class DefenderView:
    """What the defender has: never the test set, never which points were poisoned."""

    train: Split
    val: Split
    spec: DatasetSpec
    model: nn.Module | None  # trained on ``train`` by ``fit``; None for stage "train" (the defense trains itself)
    fit: Callable[[Split], nn.Module]  # the pipeline's training recipe: a fresh model trained on the given set
    generator: torch.Generator


@dataclass
class DefenseResult:
    """``model``: the model the defender deploys. Detectors also give ``scores`` (one per training point, higher
    is more suspicious) and ``flagged``; inference-time filters give ``reject`` (True = input refused)."""

    model: nn.Module
    scores: Tensor | None = None
    flagged: Tensor | None = None
    reject: Callable[[Tensor], Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PoisonAttackSpec:
    name: str
    fn: Callable[..., PoisonedSet]
    kind: AttackKind
    paper: str
    defaults: dict[str, Any]


@dataclass(frozen=True)
class PoisonDefenseSpec:
    name: str
    fn: Callable[..., DefenseResult]
    stage: DefenseStage
    paper: str
    defaults: dict[str, Any]


POISON_ATTACKS: Registry[PoisonAttackSpec] = Registry("poisoning attack", "bastion poison list")
POISON_DEFENSES: Registry[PoisonDefenseSpec] = Registry("poisoning defense", "bastion poison list")


def register_poison_attack(name: str, *, kind: AttackKind, paper: str) -> Callable[[Callable], Callable]:
    """Register ``fn(view: AttackerView, *, param=default, ...) -> PoisonedSet``; defaults are the paper's."""
    return POISON_ATTACKS.decorator(name, lambda fn: PoisonAttackSpec(name, fn, kind, paper, keyword_defaults(fn)))


def register_poison_defense(name: str, *, stage: DefenseStage, paper: str) -> Callable[[Callable], Callable]:
    """Register ``fn(view: DefenderView, *, param=default, ...) -> DefenseResult``. A parameter that asks for test
    data is refused: a defense is tuned with the defender's view only."""

    def check(fn: Callable[..., DefenseResult]) -> Callable[..., DefenseResult]:
        bad = [p for p in keyword_defaults(fn) if "test" in p.lower()]
        if bad:
            raise ValueError(f"defense {name!r}: parameter {bad[0]!r} would hand it test data; a defense sees only "
                             "the DefenderView")
        return fn

    wrap = POISON_DEFENSES.decorator(name, lambda fn: PoisonDefenseSpec(name, fn, stage, paper, keyword_defaults(fn)))
    return lambda fn: wrap(check(fn))
