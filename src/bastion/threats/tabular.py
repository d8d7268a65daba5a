"""A tabular threat with feature constraints: what an attacker may change in a row of features that must stay real.

A row is in raw units (a packet count is 3.0, a duration is in microseconds). The attacker moves the *free* features
(mutable and not derived) inside an Lp ball of radius ``eps`` in a scaled space (each feature's change divided by its
``scale``, by default its range in the data times an optional per-feature ``weight``), inside the box
``[lower, upper]``; integer features stay integers; immutable features keep their values; a one-hot group keeps
exactly one hot column; every relation (``bastion.threats.relations``) holds. Derived features are recomputed from
the others (``complete``), so an equality such as "a mean is a sum over a count" holds by construction, and
inequalities are checked (``contains``) and, where one side is a single free feature, repaired by clamping it
(``project``).

The measure (``distance``) covers the free features only: derived features follow from them. Simonetto et al. (2022,
"A Unified Framework for Adversarial Attack and Defense in Constrained Feature Space", IJCAI) state constraints the
same way (immutability, types, boundaries, feature relations) and repair derived features after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.threat import Norm, lp_norms, project_ball, sample_ball
from bastion.threats import data_to_tensor, register_threat, tensor_to_data
from bastion.threats.relations import Relation, order_definitions, parse_relation

_ORDER = {"linf": float("inf"), "l2": 2.0}
_REPAIR_ROUNDS = 3


def _flags(value: Tensor | None, d: int, default: bool) -> Tensor:
    return torch.full((d,), default, dtype=torch.bool) if value is None else torch.as_tensor(value, dtype=torch.bool)


class _Columns:
    """A row batch as a list of its columns: what the relation evaluators read (``x[:, j]``), without stacking the
    matrix again after each derived column is replaced."""

    def __init__(self, x: Tensor) -> None:
        self.columns = list(x.unbind(1))
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device

    def __getitem__(self, key: tuple[slice, int]) -> Tensor:
        return self.columns[key[1]]


@register_threat("tabular")
@dataclass(frozen=True, eq=False)
class TabularThreat:
    """See the module docstring. ``relations`` are texts; ``groups`` are tuples of column indices (one-hot groups)."""

    columns: tuple[str, ...]
    norm: Norm
    eps: float | Tensor
    lower: Tensor
    upper: Tensor
    integer: Tensor | None = None
    mutable: Tensor | None = None
    weight: Tensor | None = None
    relations: tuple[str, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()
    kind: ClassVar[str] = "tabular"
    _parsed: tuple[Relation, ...] = field(default=(), init=False, repr=False)
    _definitions: tuple[Relation, ...] = field(default=(), init=False, repr=False)
    _cache: dict[Any, Tensor] = field(default_factory=dict, init=False, repr=False)  # structure, per device/dtype

    def __post_init__(self) -> None:
        d = len(self.columns)
        if self.norm not in _ORDER:
            raise InvalidInputError(f"A tabular threat takes norm linf or l2, not {self.norm!r}.")
        set_ = object.__setattr__
        set_(self, "lower", torch.as_tensor(self.lower, dtype=torch.float64).reshape(-1))
        set_(self, "upper", torch.as_tensor(self.upper, dtype=torch.float64).reshape(-1))
        if self.lower.numel() != d or self.upper.numel() != d:
            raise InvalidInputError(f"lower and upper need one value per column ({d}); got {self.lower.numel()} and "
                                    f"{self.upper.numel()}.")
        if (self.lower > self.upper).any():
            bad = [self.columns[i] for i in (self.lower > self.upper).nonzero().flatten().tolist()[:3]]
            raise InvalidInputError(f"lower is above upper for {', '.join(bad)}; fix the bounds.")
        set_(self, "integer", _flags(self.integer, d, False))
        set_(self, "mutable", _flags(self.mutable, d, True))
        set_(self, "weight", torch.ones(d, dtype=torch.float64) if self.weight is None
             else torch.as_tensor(self.weight, dtype=torch.float64).reshape(-1))
        if (self.weight < 0).any():
            raise InvalidInputError("Per-feature budget weights must be non-negative (0 freezes a feature).")
        index = {name: i for i, name in enumerate(self.columns)}
        parsed = tuple(parse_relation(text, index) for text in self.relations)
        set_(self, "_parsed", parsed)
        set_(self, "_definitions", order_definitions(parsed, self.columns))
        for group in self.groups:
            if not group or any(not 0 <= c < d for c in group):
                raise InvalidInputError(f"One-hot group {list(group)} names columns outside 0..{d - 1}.")
        if isinstance(self.eps, Tensor) or self.eps < 0:
            eps = torch.as_tensor(self.eps)
            if eps.dim() > 1 or not torch.isfinite(eps).all() or (eps < 0).any():
                raise InvalidInputError("eps must be a non-negative float or a 1-D per-row tensor.")

    # --- structure -----------------------------------------------------------------------------------------
    @property
    def derived(self) -> Tensor:
        if "derived" not in self._cache:
            out = torch.zeros(len(self.columns), dtype=torch.bool)
            for rel in self._definitions:
                out[rel.defines] = True
            self._cache["derived"] = out
        return self._cache["derived"]

    @property
    def free(self) -> Tensor:
        """The features an attacker moves directly: mutable, not derived, not frozen by a zero weight."""
        if "free" not in self._cache:
            grouped = torch.zeros(len(self.columns), dtype=torch.bool)
            for group in self.groups:
                grouped[list(group)] = True
            self._cache["free"] = self.mutable & ~self.derived & (self.weight > 0) & ~grouped  # type: ignore[operator]
        return self._cache["free"]

    @property
    def scale(self) -> Tensor:
        """Raw units per unit of the scaled space: the feature's range times its weight (1 where the range is 0)."""
        if "scale" not in self._cache:
            span = self.upper - self.lower
            self._cache["scale"] = torch.where(span > 0, span, torch.ones_like(span)) * self.weight  # type: ignore[operator]
        return self._cache["scale"]

    def _on(self, t: Tensor, like: Tensor) -> Tensor:
        """``t`` on ``like``'s device (and float dtype), converted once per threat."""
        dtype = like.dtype if t.is_floating_point() else t.dtype
        key = (t, like.device, dtype)  # the tensor itself (hashed by identity, kept alive by the key)
        if key not in self._cache:
            self._cache[key] = t.to(device=like.device, dtype=dtype)
        return self._cache[key]

    # --- relations ---------------------------------------------------------------------------------------------
    def complete(self, x: Tensor) -> Tensor:
        """A new tensor with every derived column recomputed, in dependency order (differentiable)."""
        if not self._definitions:
            return x
        cols = _Columns(x)
        for rel in self._definitions:
            cols.columns[rel.defines] = rel.rhs(cols)  # type: ignore[arg-type,index]
        return torch.stack(cols.columns, 1)

    def penalty(self, x: Tensor) -> Tensor:
        """Total violation of the checked relations per row, each in units of its left feature's scale; 0 iff all
        hold (Simonetto et al.'s constraint loss). Differentiable."""
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        scale = self._on(self.scale, x)
        for rel in self._parsed:
            if rel.defines is not None:
                continue
            gap = rel.gap(x)
            unit = scale[rel.lhs_single] if rel.lhs_single is not None else 1.0
            total = total + (gap.abs() if rel.op == "==" else gap.clamp_min(0)) / unit
        return total

    def _repair_inequalities(self, x: Tensor) -> Tensor:
        free, integer = self.free, self.integer
        for rel in self._parsed:
            if rel.defines is not None or rel.op == "==":
                continue
            lhs_side = rel.lhs_single if rel.op == "<=" else rel.rhs_single
            rhs_side = rel.rhs_single if rel.op == "<=" else rel.lhs_single
            # the relation reads "small <= big"; clamp whichever single free feature can move
            bad = rel.gap(x) > 0
            if not bad.any():
                continue
            if lhs_side is not None and free[lhs_side]:
                target = (rel.rhs(x) if rel.op == "<=" else rel.lhs(x))
                target = target.floor() if integer[lhs_side] else target  # type: ignore[index]
                x[:, lhs_side] = torch.where(bad, torch.minimum(x[:, lhs_side], target), x[:, lhs_side])
            elif rhs_side is not None and free[rhs_side]:
                target = (rel.lhs(x) if rel.op == "<=" else rel.rhs(x))
                target = target.ceil() if integer[rhs_side] else target  # type: ignore[index]
                x[:, rhs_side] = torch.where(bad, torch.maximum(x[:, rhs_side], target), x[:, rhs_side])
        return x

    # --- the Threat protocol -----------------------------------------------------------------------------------
    def eps_for(self, inputs: Tensor) -> Tensor:
        n = inputs.shape[0]
        eps = torch.as_tensor(self.eps, dtype=inputs.dtype, device=inputs.device).reshape(-1)
        if eps.numel() == 1:
            return eps.expand(n).clone()
        if eps.numel() != n:
            raise InvalidInputError(f"Per-row eps has {eps.numel()} entries but there are {n} rows.")
        return eps

    def distance(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        """The norm of the free features' change in the scaled space, per row."""
        delta = (x_adv - inputs) / self._on(self.scale, inputs)
        return lp_norms(delta[:, self._on(self.free, inputs)], _ORDER[self.norm])

    def project(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        """The repair operator: ball and box on the free features, integers rounded towards the input, immutable
        and frozen features restored, one-hot groups re-hot, inequalities clamped, derived features recomputed."""
        x_adv = x_adv.detach()
        out = self._rehot(self._ball_box(x_adv, inputs), x_adv, inputs)
        # alternate the budget and the relations: a clamp that repairs a relation can leave the ball, and the next
        # ball projection can break the relation again; a few rounds settle most rows (contains tells the rest)
        for _ in range(_REPAIR_ROUNDS):
            out = self._repair_inequalities(self.complete(out))
            out = self._ball_box(out, inputs)
        out = self._repair_inequalities(self.complete(out))
        return self.complete(out)

    def _ball_box(self, x: Tensor, inputs: Tensor) -> Tensor:
        """Free features into the ball (scaled space) and the box, integers rounded towards the input; every other
        feature back to its input value (derived ones are recomputed by the caller)."""
        free, scale = self._on(self.free, inputs), self._on(self.scale, inputs)
        lower, upper = self._on(self.lower, inputs), self._on(self.upper, inputs)
        delta = project_ball(((x - inputs) / scale).masked_fill(~free, 0.0), self.eps_for(inputs), self.norm)
        out = self._round_towards(torch.maximum(torch.minimum(inputs + delta * scale, upper), lower), inputs)
        for group in self.groups:  # one-hot groups keep what the caller has (``_rehot`` decides them)
            out[:, list(group)] = x[:, list(group)]
        return out

    def _round_towards(self, x: Tensor, inputs: Tensor) -> Tensor:
        integer = self._on(self.integer, x) & self._on(self.free, x)  # type: ignore[arg-type]
        rounded = torch.where(x > inputs, x.floor(), x.ceil())
        return torch.where(integer, rounded, x)

    def _rehot(self, out: Tensor, x_adv: Tensor, inputs: Tensor) -> Tensor:
        mutable = self._on(self.mutable, inputs)  # type: ignore[arg-type]
        for group in self.groups:
            cols = list(group)
            if bool(mutable[cols].all()):
                hot = torch.nn.functional.one_hot(x_adv[:, cols].argmax(1), len(cols)).to(out.dtype)
                out[:, cols] = hot
            else:
                out[:, cols] = inputs[:, cols]
        return out

    def violations(self, x_adv: Tensor, inputs: Tensor, *, atol: float = 1e-5) -> dict[str, Tensor]:
        """Per named constraint, which rows break it (``(N,)`` booleans)."""
        lower, upper = self._on(self.lower, inputs), self._on(self.upper, inputs)
        tol = atol * self._on(self.scale, inputs)
        changed = (x_adv - inputs).abs() > tol
        derived = self._on(self.derived, inputs)
        out = {
            # a derived feature follows from the others: the data's range of it is no limit of a real row
            "box": (((x_adv < lower - tol) | (x_adv > upper + tol)) & ~derived).any(1),
            "budget": self.distance(x_adv, inputs) > self.eps_for(inputs) * (1 + 1e-5) + atol,
            "immutable": (changed & ~self._on(self.mutable, inputs) & ~derived).any(1),  # type: ignore[operator]
            "integer": ((x_adv - x_adv.round()).abs() > 1e-4)[:, self._on(self.integer, inputs)].any(1),
            "finite": ~torch.isfinite(x_adv).all(1),
        }
        for i, group in enumerate(self.groups):
            g = x_adv[:, list(group)]
            out[f"one-hot {i}"] = ~(((g - g.round()).abs() <= 1e-4).all(1) & ((g.sum(1) - 1).abs() <= 1e-4))
        for rel in self._parsed:
            out[rel.text] = ~rel.holds(x_adv)
        return out

    def contains(self, x_adv: Tensor, inputs: Tensor, *, atol: float = 1e-5) -> Tensor:
        """Per row, whether every constraint holds."""
        bad = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
        for broken in self.violations(x_adv, inputs, atol=atol).values():
            bad |= broken
        return ~bad

    def random_start(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A uniform draw in the scaled ball around ``inputs`` (free features), then ``project``; a row whose draw
        cannot be repaired inside the constraints starts at its input (every start is valid)."""
        delta = sample_ball(inputs.shape, self.eps_for(inputs), self.norm, generator, inputs.device, inputs.dtype)
        out = self.project(inputs + delta * self._on(self.scale, inputs), inputs)
        return torch.where(self.contains(out, inputs)[:, None], out, inputs)

    def select(self, index: Tensor) -> TabularThreat:
        if isinstance(self.eps, Tensor) and self.eps.numel() > 1:
            return replace(self, eps=self.eps[index.to(self.eps.device)])
        return self

    def validate(self, inputs: Tensor) -> None:
        """The inputs themselves must satisfy every constraint: one line naming the first that fails, and how often."""
        if inputs.dim() != 2 or inputs.shape[1] != len(self.columns):
            raise InvalidInputError(f"Tabular inputs must be (rows, {len(self.columns)}) for columns "
                                    f"{self.columns[:3]}...; got shape {tuple(inputs.shape)}.")
        for name, broken in self.violations(inputs, inputs).items():
            if name in ("budget", "immutable"):
                continue
            if broken.any():
                rows = broken.nonzero().flatten()
                raise InvalidInputError(
                    f"Constraint {name!r} fails on {rows.numel()} of {inputs.shape[0]} input rows (first: row "
                    f"{int(rows[0])}); the constraints contradict the data: fix the constraint file or the data.")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": list(self.columns), "norm": self.norm, "eps": tensor_to_data(self.eps),
                "lower": self.lower.tolist(), "upper": self.upper.tolist(),
                "integer": self.integer.tolist(), "mutable": self.mutable.tolist(),  # type: ignore[union-attr]
                "weight": self.weight.tolist(), "relations": list(self.relations),  # type: ignore[union-attr]
                "groups": [list(g) for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularThreat:
        return cls(tuple(data["columns"]), data["norm"], data_to_tensor(data["eps"]),
                   torch.tensor(data["lower"]), torch.tensor(data["upper"]),
                   integer=torch.tensor(data["integer"]), mutable=torch.tensor(data["mutable"]),
                   weight=torch.tensor(data["weight"]), relations=tuple(data["relations"]),
                   groups=tuple(tuple(g) for g in data["groups"]))


__all__ = ["TabularThreat"]
