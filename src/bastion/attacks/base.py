"""The attack registry and the contract every attack follows.

An attack is a function::

    fn(model, inputs, labels, threat, *, targeted=False, generator=None, **hyperparameters) -> Tensor

that returns adversarial examples of ``inputs``' shape, dtype and device. With ``targeted=True``
``labels`` are the target classes. Attacks never mutate ``inputs``, never move the model and draw
randomness only from ``generator``. Success is decided by the runner (``bastion.evaluation.runner``),
not by the attack: it re-projects every returned example onto the threat model and re-classifies it.

``goal="budget"`` attacks look for any adversarial example inside ``threat``; ``goal="minimal"``
attacks look for the smallest one and may return examples outside the ball (their norms give the
whole robust-accuracy-versus-eps curve).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.registry import Registry
from bastion.threat import LpThreat, Norm

Goal = Literal["budget", "minimal"]
Access = Literal["white-box", "score", "decision", "transfer"]


class AttackFn(Protocol):
    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        threat: LpThreat,
        *,
        targeted: bool = False,
        generator: torch.Generator | None = None,
        **kwargs: object,
    ) -> Tensor: ...


@dataclass(frozen=True)
class AttackSpec:
    """Registry entry: the function and what it supports."""

    name: str
    fn: AttackFn
    norms: tuple[Norm, ...]
    goal: Goal
    access: Access
    paper: str
    randomized: bool = False
    threats: tuple[str, ...] = ("lp",)  # the threat kinds it accepts; for "lp" also only the norms above

    def accepts(self, threat: Any) -> bool:
        """Whether this attack can run inside ``threat`` (its kind, and for Lp threats its norm)."""
        return threat.kind in self.threats and (threat.kind != "lp" or threat.norm in self.norms)

    def refusal(self, threat: Any) -> str:
        """Why ``accepts(threat)`` is false, naming the fix."""
        if threat.kind not in self.threats:
            return (f"Attack {self.name!r} works on {', '.join(self.threats)} threats, not {threat.kind}; pick an "
                    "attack for this threat kind (`bastion attacks list`).")
        return (f"Attack {self.name!r} supports norms {', '.join(self.norms)}, not {threat.norm}; "
                "pick another --norm or another attack (`bastion attacks list`).")

    def __call__(self, *args: object, **kwargs: object) -> Tensor:
        return self.fn(*args, **kwargs)  # type: ignore[arg-type]


ATTACKS: Registry[AttackSpec] = Registry("attack", "bastion attacks list")


def register_attack(
    name: str,
    *,
    norms: tuple[Norm, ...],
    goal: Goal,
    access: Access = "white-box",
    paper: str,
    randomized: bool = False,
    threats: tuple[str, ...] = ("lp",),
) -> Callable[[Callable], Callable]:
    """Register an attack function under ``name`` with its metadata and the threat kinds it accepts."""
    return ATTACKS.decorator(
        name,
        lambda fn: AttackSpec(name, fn, norms, goal, access, paper, randomized, threats),
    )


COUNTS = frozenset({"steps", "n_iter", "max_iter", "max_iterations", "max_queries", "samples", "max_evals",
                    "init_evals", "candidates", "coordinates", "restarts", "n_target_classes"})  # at least 1


def check_params(spec: AttackSpec, params: dict[str, Any]) -> None:
    """Each hyperparameter against the attack's own signature: a known name, its type (from the default or the
    annotation), and its range (counts at least 1, other numbers finite and non-negative). One line naming the fix."""
    allowed = {n: p for n, p in inspect.signature(spec.fn).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("targeted", "generator")}
    for key, value in params.items():
        if key not in allowed:
            raise InvalidInputError(f"{spec.name} has no parameter {key!r}; its parameters are "
                                    f"{', '.join(sorted(allowed))}.")
        _check_value(spec.name, key, value, _kind(allowed[key]))


def _kind(param: inspect.Parameter) -> str | None:
    default, note = param.default, str(param.annotation)
    if isinstance(default, bool) or note == "bool":
        return "bool"
    for kind, py in (("int", int), ("float", float), ("str", str)):
        if isinstance(default, py) or note in (kind, f"{kind} | None"):
            return kind
    return None  # tensors, modules: not checked here


def _check_value(attack: str, key: str, value: Any, kind: str | None) -> None:
    if kind is None or value is None:
        return
    ok = {"bool": isinstance(value, bool), "str": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, int | float) and not isinstance(value, bool)}[kind]
    if not ok:
        article = "an" if kind == "int" else "a"
        name = {"int": "integer", "float": "number", "bool": "boolean (true/false)", "str": "string"}[kind]
        raise InvalidInputError(f"{attack}: {key} must be {article} {name}; got {value!r}, e.g. -p {key}=...")
    if key in COUNTS and value < 1:
        raise InvalidInputError(f"{attack}: {key} must be at least 1; got {value!r}.")
    if kind in ("int", "float") and (not math.isfinite(value) or value < 0):
        raise InvalidInputError(f"{attack}: {key} must be finite and non-negative; got {value!r}.")


def get_attack(name: str) -> AttackSpec:
    return ATTACKS.get(name)
