"""Inference-time defenses for flow detectors: modules that wrap a detector (raw-unit flows in, logits out) and answer
the alarm class for a flow they flag, so every attack and the evaluation run on them unchanged.

- ``constraint_gate``: a flow that cannot exist is itself evidence of tampering. The gate checks each incoming flow
  against the threat's structure (every relation, integer features, one-hot groups, finite values, and no negative
  value in a column the data never has negative) and answers the alarm class for a flow that fails. It catches
  only *unconstrained* attacks (those that perturb the feature vector freely, e.g. PGD on the min-max scaled
  vector); a constrained attack (CPGD, CAPGD, MoEvA2, CAA) returns flows that satisfy every constraint and passes
  it by construction. That is the point of measuring it: the gap between the two is what constraint-respecting
  attacks buy an adversary. The data's range (the threat's box) is not checked by default: a real flow may be
  longer or bigger than any training flow (``box=True`` checks it too, for a closed world).
- ``feature_squeezing``: Xu, Evans & Qi 2018 ("Feature Squeezing: Detecting Adversarial Examples in Deep Neural
  Networks", NDSS) adapted to flows: bit-depth reduction of the min-max scaled feature vector (the threat's box,
  clamped to [0, 1]) to ``bits`` bits, mapped back to raw units; a flow is flagged when the detector's prediction on
  the squeezed flow differs from that on the flow (``threshold=None``), or, as in the paper, when the L1 distance
  between the two probability vectors exceeds ``threshold``. Default 5 bits, Xu et al.'s setting for CIFAR-10
  (their 1 bit is for binary MNIST pixels). Deterministic: no random draw.

``IDS_DEFENSES`` lists them; ``build_ids_defense(name, detector, threat, **params)`` builds one in eval mode. Every
defense has ``flags(x)`` (which flows it flags) besides ``forward``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.registry import Registry, check_params, keyword_defaults
from bastion.threats.tabular import TabularThreat

ALARM_MARGIN = 1e4  # a flagged flow's alarm logit lies this far above the others


@dataclass(frozen=True)
class IdsDefenseSpec:
    """A registered flow defense: ``build(detector, threat, **params) -> nn.Module``."""

    name: str
    build: Callable[..., nn.Module]
    paper: str
    description: str


IDS_DEFENSES: Registry[IdsDefenseSpec] = Registry("IDS defense", "bastion ids evaluate --help")


def register_ids_defense(name: str, paper: str, description: str) -> Callable[[Callable], Callable]:
    return IDS_DEFENSES.decorator(name, lambda fn: IdsDefenseSpec(name, fn, paper, description))


def build_ids_defense(name: str, detector: nn.Module, threat: TabularThreat, **params: Any) -> nn.Module:
    """The registered defense ``name`` around ``detector``, for flows of ``threat``'s columns; in eval mode."""
    spec = IDS_DEFENSES.get(name)
    given = check_params("IDS defense", name, params, keyword_defaults(spec.build))
    return spec.build(detector, threat, **given).eval()


class FlaggingDefense(nn.Module, ABC):
    """``detector(x)`` where ``flags(x)`` is false; the ``alarm`` class (a constant logit vector) where it is true."""

    def __init__(self, detector: nn.Module, alarm: int) -> None:
        super().__init__()
        if alarm < 1:
            raise InvalidInputError(f"alarm={alarm} must name an attack class (index 1 or more; 0 is benign).")
        self.detector, self.alarm = detector, alarm

    @abstractmethod
    def flags(self, x: Tensor) -> Tensor:
        """Per row, whether the flow is an alarm (``(N,)`` booleans)."""

    def forward(self, x: Tensor) -> Tensor:
        logits = self.detector(x)
        if self.alarm >= logits.shape[1]:
            raise InvalidInputError(f"alarm={self.alarm} but the detector has {logits.shape[1]} classes.")
        flagged = self.flags(x).to(logits.device)
        alarm = torch.full_like(logits, -ALARM_MARGIN)
        alarm[:, self.alarm] = 0.0
        return torch.where(flagged[:, None], alarm, logits)


class ConstraintGate(FlaggingDefense):
    """Flags flows that break the threat's relations, integer features, one-hot groups or non-negativity (and the
    box with ``box=True``); see the module docstring."""

    def __init__(self, detector: nn.Module, threat: TabularThreat, *, alarm: int = 1, box: bool = False,
                 atol: float = 1e-5) -> None:
        super().__init__(detector, alarm)
        self.threat, self.box, self.atol = threat, box, atol
        skip = {"budget", "immutable"} | (set() if box else {"box"})
        self.skip = frozenset(skip)

    def reasons(self, x: Tensor) -> dict[str, Tensor]:
        """Per checked constraint, which flows break it."""
        x = x.detach()
        out = {k: v for k, v in self.threat.violations(x, x, atol=self.atol).items() if k not in self.skip}
        floor = self.threat.lower.to(x) >= 0  # a column the data never has negative: a negative value is impossible
        out["negative"] = ((x < 0) & floor).any(1)
        return out

    def flags(self, x: Tensor) -> Tensor:
        bad = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for broken in self.reasons(x).values():
            bad |= broken.to(bad.device)
        return bad


class FeatureSqueezer(FlaggingDefense):
    """Flags flows whose prediction moves under ``bits``-bit quantisation of the min-max scaled features."""

    def __init__(self, detector: nn.Module, threat: TabularThreat, *, bits: int = 5, threshold: float | None = None,
                 alarm: int = 1) -> None:
        super().__init__(detector, alarm)
        if not 1 <= bits <= 16:
            raise InvalidInputError(f"bits={bits} must lie in 1..16.")
        if threshold is not None and not 0 <= threshold <= 2:
            raise InvalidInputError(f"threshold={threshold} is an L1 distance of probabilities: give 0..2 or None.")
        self.bits, self.threshold = bits, threshold
        span = threat.upper - threat.lower
        self.register_buffer("lower", threat.lower.clone())
        self.register_buffer("span", torch.where(span > 0, span, torch.ones_like(span)))

    def squeeze(self, x: Tensor) -> Tensor:
        """``x`` with each feature rounded to one of ``2**bits`` levels of the threat's box (raw units)."""
        levels = 2**self.bits - 1
        unit = ((x - self.lower.to(x)) / self.span.to(x)).clamp(0, 1)
        return self.lower.to(x) + torch.round(unit * levels) / levels * self.span.to(x)

    def flags(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            plain, squeezed = self.detector(x), self.detector(self.squeeze(x))
        if self.threshold is None:
            return plain.argmax(1) != squeezed.argmax(1)
        return (plain.softmax(1) - squeezed.softmax(1)).abs().sum(1) > self.threshold


@register_ids_defense("constraint_gate", "bastion (the defender's rule: a flow that cannot exist is an alarm)",
                      "Alarm on a flow that breaks a relation, an integer or one-hot feature, or non-negativity.")
def constraint_gate(detector: nn.Module, threat: TabularThreat, *, alarm: int = 1, box: bool = False) -> nn.Module:
    return ConstraintGate(detector, threat, alarm=alarm, box=box)


@register_ids_defense("feature_squeezing", "Xu, Evans & Qi 2018, Feature Squeezing (NDSS); bit depth 5 as for CIFAR-10",
                      "Alarm when the prediction moves under bit-depth reduction of the min-max scaled flow.")
def feature_squeezing(detector: nn.Module, threat: TabularThreat, *, bits: int = 5, threshold: float | None = None,
                      alarm: int = 1) -> nn.Module:
    return FeatureSqueezer(detector, threat, bits=bits, threshold=threshold, alarm=alarm)


__all__ = ["IDS_DEFENSES", "ConstraintGate", "FeatureSqueezer", "FlaggingDefense", "IdsDefenseSpec",
           "build_ids_defense", "register_ids_defense"]
