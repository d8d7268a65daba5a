"""Batches of any structure: a tensor, or a dict / tuple / list of them (e.g. token ids and an attention mask),
all sharing the batch dimension 0. The runner, the counting wrapper and the validation go through these helpers,
so a model may take whatever structure its data has; a model is called with the structure as its one argument."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.errors import InvalidInputError

Batch = Any  # Tensor | Mapping[str, Batch] | Sequence[Batch]


def leaves(b: Batch) -> list[Tensor]:
    if isinstance(b, Tensor):
        return [b]
    if isinstance(b, Mapping):
        return [t for v in b.values() for t in leaves(v)]
    if isinstance(b, Sequence) and not isinstance(b, str):
        return [t for v in b for t in leaves(v)]
    raise InvalidInputError(f"A batch holds tensors, or dicts/tuples/lists of tensors; got a {type(b).__name__}.")


def tree_map(fn: Callable[[Tensor], Tensor], b: Batch) -> Batch:
    """``fn`` applied to every tensor of the structure, which keeps its shape (dict keys, tuple or list)."""
    if isinstance(b, Tensor):
        return fn(b)
    if isinstance(b, Mapping):
        return {k: tree_map(fn, v) for k, v in b.items()}
    return type(b)(tree_map(fn, v) for v in b)


def batch_size(b: Batch) -> int:
    """The common size of dimension 0; one clear error if the tensors disagree."""
    if isinstance(b, Tensor):  # the common case, without the tree walk
        return int(b.shape[0])
    sizes = {int(t.shape[0]) for t in leaves(b)}
    if len(sizes) != 1:
        raise InvalidInputError(f"The tensors of a batch must share their first (batch) dimension; got sizes "
                                f"{sorted(sizes)}.")
    return sizes.pop()


def take(b: Batch, index: Tensor | slice) -> Batch:
    """The rows ``index`` of every tensor."""
    if isinstance(b, Tensor):
        return b[index]
    return tree_map(lambda t: t[index.to(t.device) if isinstance(index, Tensor) else index], b)


def put_(b: Batch, index: Tensor, values: Batch) -> None:
    """Write ``values`` (the same structure, ``len(index)`` rows) into the rows ``index`` of ``b``, in place."""
    for leaf, value in zip(leaves(b), leaves(values), strict=True):
        leaf[index] = value.detach().to(leaf)


def clone(b: Batch) -> Batch:
    return b.detach().clone() if isinstance(b, Tensor) else tree_map(lambda t: t.detach().clone(), b)


def to(b: Batch, device: torch.device | str) -> Batch:
    return b.to(device) if isinstance(b, Tensor) else tree_map(lambda t: t.to(device), b)


def detach(b: Batch) -> Batch:
    return b.detach() if isinstance(b, Tensor) else tree_map(lambda t: t.detach(), b)


def device_of(b: Batch) -> torch.device:
    return leaves(b)[0].device
