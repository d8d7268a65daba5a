"""Threat models: what an attacker may change, as one protocol that every kind implements.

A threat answers, for a batch of original inputs and candidate examples: which candidates are allowed
(``contains``), the nearest allowed candidate (``project``; a discrete threat repairs instead), how far a candidate
is from its original in the threat's own measure (``distance``: an Lp norm, a number of substituted words, a
signal-to-noise ratio), a random allowed start (``random_start``), the same threat for a subset of the samples
(``select``), a check of the inputs themselves (``validate``), and a plain-data form (``to_dict``/``from_dict``)
that configs, run keys and the store carry. ``kind`` names the family ("lp", and later "tabular", "text",
"audio"); attacks declare the kinds they accept and the suites are registered per kind.

``LpThreat`` (bastion.threat) is the first implementation; new kinds register with ``@register_threat``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.registry import Registry


@runtime_checkable
class Threat(Protocol):
    """The protocol (see the module docstring). Inputs may be any tensor with the batch on dimension 0."""

    kind: str

    def contains(self, x_adv: Tensor, inputs: Tensor) -> Tensor: ...

    def project(self, x_adv: Tensor, inputs: Tensor) -> Tensor: ...

    def distance(self, x_adv: Tensor, inputs: Tensor) -> Tensor: ...

    def random_start(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

    def select(self, index: Tensor) -> Threat: ...

    def validate(self, inputs: Tensor) -> None: ...

    def to_dict(self) -> dict[str, Any]: ...


THREATS: Registry[type] = Registry("threat kind", "bastion attacks list")


def register_threat(kind: str) -> Any:
    """Class decorator: register a threat class under its ``kind`` so ``threat_from_dict`` can rebuild it."""

    def wrap(cls: type) -> type:
        THREATS.add(kind, cls)
        return cls

    return wrap


def threat_from_dict(data: dict[str, Any]) -> Threat:
    """Rebuild a threat from its ``to_dict`` form (as stored with a run)."""
    if "kind" not in data:
        raise InvalidInputError(f"A stored threat needs a 'kind'; got keys {sorted(data)}.")
    if data["kind"] == "tabular":
        import bastion.threats.tabular  # noqa: F401  (registers itself; imported lazily: it builds on bastion.threat)
    cls = THREATS.get(str(data["kind"]))
    return cls.from_dict(data)  # type: ignore[attr-defined,no-any-return]


def tensor_to_data(value: float | Tensor | None) -> Any:
    """A float or tensor as JSON-able data (tensors as nested lists with their shape)."""
    if isinstance(value, Tensor):
        return {"tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    return value


def data_to_tensor(value: Any) -> Any:
    """The inverse of ``tensor_to_data``."""
    if isinstance(value, dict) and "tensor" in value:
        return torch.tensor(value["tensor"], dtype=getattr(torch, value.get("dtype", "float32")))
    return value


__all__ = ["THREATS", "Threat", "data_to_tensor", "register_threat", "tensor_to_data", "threat_from_dict"]
