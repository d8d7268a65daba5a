"""One evasion attack against one detector, judged the way a defender would: did the flow get through, and could it
exist on the wire?

The attacked flows are attack flows the detector catches. Success means the detector calls the adversarial flow
benign; validity means it satisfies every constraint of the threat (``TabularThreat.contains``: box, budget,
immutable and integer features, every relation). Both are decided here, not by the attack, and neither hides the
other: an attack's *valid success* is what counts.

Three routes, chosen from the attack's registry entry and the detector:
- a constrained attack (it accepts the ``tabular`` threat) runs in the threat as it is;
- an unconstrained attack (an Lp attack such as ``pgd``) runs as the field's tools run it: on the min-max scaled
  feature vector, every feature free, inside the same Lp budget; its examples are then checked against the
  constraints like any other, so its "success" on flows that cannot exist is reported as such;
- a white-box attack against a detector without gradients (the gradient-boosted trees) is a transfer: it runs on the
  neural ``surrogate`` and its examples are judged on the detector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks import get_attack
from bastion.attacks.base import AttackSpec, check_params
from bastion.oracle import CountingModel
from bastion.threat import LpThreat
from bastion.threats.tabular import TabularThreat


@dataclass(frozen=True)
class Evasion:
    """Per attacked flow (the detected attack flows): class, outcome, validity; totals of the cost."""

    attack: str
    route: str  # "constrained", "unconstrained" or "transfer from <surrogate>"
    classes: np.ndarray  # (N,) the flows' true class names
    clean: Tensor  # (N, D) raw units
    adversarial: Tensor  # (N, D)
    evaded: Tensor  # (N,) the detector calls the adversarial flow benign
    valid: Tensor  # (N,) it satisfies every constraint
    violated: dict[str, int] = field(default_factory=dict)  # constraint -> number of flows that break it
    seconds: float = 0.0
    forward: int = 0
    backward: int = 0

    @property
    def success(self) -> Tensor:
        """Evaded with a flow that could exist."""
        return self.evaded & self.valid

    def rates(self, mask: Tensor | None = None) -> dict[str, float]:
        keep = torch.ones_like(self.evaded) if mask is None else mask
        n = int(keep.sum())
        if n == 0:
            return {"attacked": 0, "success_rate": float("nan"), "valid_rate": float("nan"),
                    "valid_success_rate": float("nan")}
        return {"attacked": n, "success_rate": float(self.evaded[keep].float().mean()),
                "valid_rate": float(self.valid[keep].float().mean()),
                "valid_success_rate": float(self.success[keep].float().mean())}

    def per_class(self) -> dict[str, dict[str, float]]:
        return {name: self.rates(torch.as_tensor(self.classes == name)) for name in sorted(set(self.classes))}


class Scaled(nn.Module):
    """``model`` seen on min-max scaled rows: ``z`` in [0, 1] is ``lower + z * span`` in raw units."""

    def __init__(self, model: nn.Module, lower: Tensor, span: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("lower", lower)
        self.register_buffer("span", span)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(self.lower + z * self.span)  # type: ignore[no-any-return]


def has_gradients(detector: nn.Module) -> bool:
    """Whether white-box attacks can run on ``detector``: it has trainable parameters (the gradient-boosted trees
    have none; they answer probabilities only)."""
    return any(p.requires_grad for p in detector.parameters())


def detected(detector: nn.Module, rows: Tensor, benign: int) -> Tensor:
    with torch.no_grad():
        return detector(rows).argmax(1) != benign


def _run(spec: AttackSpec, model: nn.Module, rows: Tensor, threat: TabularThreat, benign: int,
         generator: torch.Generator, params: dict[str, Any]) -> tuple[Tensor, str, int, int]:
    """The attack's raw output for ``rows`` (raw units), its route, and its forward/backward passes."""
    targets = torch.full((rows.shape[0],), benign, dtype=torch.long)
    if "tabular" in spec.threats:
        counting = CountingModel(model, rows.shape[0])
        out = spec.fn(counting, rows, targets, threat, targeted=True, generator=generator, **params)
        route = "constrained"
    else:
        lower, span = threat.lower.to(rows), (threat.upper - threat.lower).to(rows)
        span = torch.where(span > 0, span, torch.ones_like(span))
        counting = CountingModel(Scaled(model, lower, span), rows.shape[0])
        lp = LpThreat(threat.norm, float(threat.eps), 0.0, 1.0)  # type: ignore[arg-type]
        z = spec.fn(counting, (rows - lower) / span, targets, lp, targeted=True, generator=generator, **params)
        out, route = lower + z.clamp(0, 1) * span, "unconstrained"
    counts = counting.counts()
    return out.detach(), route, int(counts.forward.sum()), int(counts.backward.sum())


def evade(detector: nn.Module, rows: Tensor, classes: np.ndarray, threat: TabularThreat, attack: str,
          params: dict[str, Any] | None = None, *, benign: int = 0, seed: int = 0,
          surrogate: nn.Module | None = None) -> Evasion:
    """Attack the flows of ``rows`` that ``detector`` catches with ``attack`` (a registered attack name) and judge
    every result (module docstring). ``rows`` are raw-unit attack flows with their class names ``classes``."""
    spec = get_attack(attack)
    params = dict(params or {})
    check_params(spec, params)
    caught = detected(detector, rows, benign)
    rows, classes = rows[caught], np.asarray(classes)[caught.numpy()]
    target = detector
    if not has_gradients(detector) and spec.access == "white-box":
        if surrogate is None:
            raise ValueError(f"{attack} needs gradients and the detector has none; pass a surrogate")
        target = surrogate
    started = time.perf_counter()
    out, route, fwd, bwd = _run(spec, target, rows, threat, benign, torch.Generator().manual_seed(seed), params)
    seconds = time.perf_counter() - started
    if target is not detector:
        route = f"transfer from {getattr(surrogate, 'name', 'a surrogate')}"
    evaded = ~detected(detector, out, benign)
    broken = threat.violations(out, rows)
    valid = ~torch.stack(list(broken.values())).any(0) if broken else torch.ones_like(evaded)
    violated = {name: int(b.sum()) for name, b in broken.items() if b.any()}
    return Evasion(attack, route, classes, rows, out, evaded, valid, violated, seconds, fwd, bwd)


__all__ = ["Evasion", "Scaled", "detected", "evade", "has_gradients"]
