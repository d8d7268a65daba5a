"""Relations between the features of a tabular row, written as text and evaluated on torch tensors.

A relation is ``LHS OP RHS`` with ``OP`` one of ``==``, ``<=``, ``>=``; each side is arithmetic over feature names in
square brackets, numbers, ``+ - * /``, and the functions ``min(a, b)``, ``max(a, b)`` and ``floor(a)``. For example::

    [Flow Bytes/s] == ([Total Length of Fwd Packets] + [Total Length of Bwd Packets]) / ([Flow Duration] / 1e6)
    [Fwd Packet Length Min] <= [Fwd Packet Length Mean]

An equality whose left side is a single feature *defines* that feature (it is derived: recomputed from the others);
any other relation is checked. Division by zero gives 0 (a zero-duration flow has rate 0, as bastion's generator writes
it). Evaluation is differentiable (except through ``floor``), so an attack can follow gradients through a derived
feature into the features that define it. Expressions are parsed with ``ast`` and only the nodes above are accepted:
a relation file is data, never code.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.errors import InvalidInputError

Expr = Callable[[Tensor], Tensor]  # rows (N, D) -> values (N,)
_NAME = re.compile(r"\[([^\[\]]+)\]")
_OPS = ("==", "<=", ">=")


@dataclass(frozen=True)
class Relation:
    """One parsed relation: its text, operator, the features each side reads, and the evaluators."""

    text: str
    op: str
    lhs: Expr
    rhs: Expr
    lhs_names: tuple[str, ...]
    rhs_names: tuple[str, ...]
    lhs_single: int | None  # the column index when the left side is one bare feature
    rhs_single: int | None

    @property
    def defines(self) -> int | None:
        """The column this relation derives (an equality with one bare feature on the left), else None."""
        return self.lhs_single if self.op == "==" else None

    def gap(self, x: Tensor) -> Tensor:
        """``lhs - rhs`` per row (for ``>=`` relations, ``rhs - lhs``): a relation holds where the gap is <= 0
        (``<=``, ``>=``) or 0 (``==``)."""
        diff = self.lhs(x) - self.rhs(x)
        return -diff if self.op == ">=" else diff

    def holds(self, x: Tensor, *, rtol: float = 1e-4, atol: float = 1e-3) -> Tensor:
        """Per row, whether the relation holds within ``atol + rtol * |rhs|``."""
        tol = atol + rtol * self.rhs(x).abs().maximum(self.lhs(x).abs())
        gap = self.gap(x)
        return gap.abs() <= tol if self.op == "==" else gap <= tol


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    nonzero = b != 0
    return torch.where(nonzero, a / torch.where(nonzero, b, torch.ones_like(b)), torch.zeros_like(a))


_BINOPS: dict[type, Callable[[Tensor, Tensor], Tensor]] = {
    ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul, ast.Div: _safe_div,
}
_CALLS: dict[str, tuple[int, Callable[..., Tensor]]] = {
    "min": (2, torch.minimum), "max": (2, torch.maximum), "floor": (1, torch.floor),
}


def _compile(node: ast.AST, slots: dict[str, int], text: str) -> Expr:
    """An evaluator for one expression node; anything outside the small grammar is refused."""
    if isinstance(node, ast.Name) and node.id in slots:
        col = slots[node.id]
        return lambda x: x[:, col]
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        value = float(node.value)
        return lambda x: torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _compile(node.operand, slots, text)
        return lambda x: -inner(x)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        fn, left, right = _BINOPS[type(node.op)], _compile(node.left, slots, text), _compile(node.right, slots, text)
        return lambda x: fn(left(x), right(x))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS and not node.keywords:
        arity, fn = _CALLS[node.func.id]
        if len(node.args) == arity:
            args = [_compile(a, slots, text) for a in node.args]
            return lambda x: fn(*(a(x) for a in args))
    raise InvalidInputError(
        f"Relation {text!r}: {ast.unparse(node)!r} is not allowed; use [feature] names, numbers, + - * /, "
        "min(a, b), max(a, b) and floor(a)."
    )


def _side(text: str, side: str, columns: dict[str, int]) -> tuple[Expr, tuple[str, ...], int | None]:
    names = tuple(dict.fromkeys(_NAME.findall(side)))
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise InvalidInputError(
            f"Relation {text!r} names {', '.join(repr(u) for u in unknown)}, which the data does not have; fix the "
            "name (feature names go in [brackets], spelled as the data's columns) or drop the relation."
        )
    slots = {f"_v{i}": columns[n] for i, n in enumerate(names)}
    source = _NAME.sub(lambda m: f"_v{names.index(m.group(1))}", side).strip()
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError:
        raise InvalidInputError(f"Relation {text!r} does not parse; write e.g. '[a] <= [b] + 2'.") from None
    single = columns[names[0]] if isinstance(tree, ast.Name) and len(names) == 1 else None
    return _compile(tree, slots, text), names, single


def parse_relation(text: str, columns: dict[str, int]) -> Relation:
    """Parse ``text`` against the data's ``columns`` (name -> index). One clear line on any error."""
    masked = _NAME.sub(lambda m: "\0" * len(m.group(0)), text)
    ops = [op for op in _OPS if op in masked]
    if len(ops) != 1 or masked.count(ops[0]) != 1:
        raise InvalidInputError(
            f"Relation {text!r} needs exactly one of ==, <=, >= (outside the [feature] names); e.g. '[a] <= [b]'."
        )
    cut = masked.index(ops[0])
    lhs, lhs_names, lhs_single = _side(text, text[:cut], columns)
    rhs, rhs_names, rhs_single = _side(text, text[cut + len(ops[0]):], columns)
    return Relation(text, ops[0], lhs, rhs, lhs_names, rhs_names, lhs_single, rhs_single)


def names_in(text: str) -> tuple[str, ...]:
    """The feature names a relation's text reads, in order of first mention."""
    return tuple(dict.fromkeys(_NAME.findall(text)))


def order_definitions(relations: tuple[Relation, ...], columns: tuple[str, ...]) -> tuple[Relation, ...]:
    """The defining equalities in an order where each is computed after every derived feature it reads; one line
    when a feature is defined twice or the definitions form a cycle."""
    defining = [r for r in relations if r.defines is not None]
    by_col: dict[int, Relation] = {}
    for rel in defining:
        if rel.defines in by_col:
            raise InvalidInputError(
                f"{columns[rel.defines]!r} is defined twice ({by_col[rel.defines].text!r} and {rel.text!r}); keep one "
                "and write the other as a check with <= and >=."
            )
        by_col[rel.defines] = rel  # type: ignore[index]
    index = {name: i for i, name in enumerate(columns)}
    ordered: list[Relation] = []
    done: set[int] = set()
    pending = dict(by_col)
    while pending:
        ready = [c for c, r in pending.items() if all(index[n] in done or index[n] not in by_col for n in r.rhs_names)]
        if not ready:
            names = ", ".join(repr(columns[c]) for c in pending)
            raise InvalidInputError(f"The definitions of {names} depend on each other in a cycle; break the cycle.")
        for col in sorted(ready):
            ordered.append(pending.pop(col))
            done.add(col)
    return tuple(ordered)


__all__ = ["Relation", "names_in", "order_definitions", "parse_relation"]
