"""The cost of a poisoning step in model passes: every sample that goes through a model's top-level ``forward``
counts once, and once more as a gradient pass when the forward ran with gradients on (it is followed by a
backward in every training and optimisation loop here). Counted by global module hooks, so attacks and defenses
need no bookkeeping of their own; nested submodule calls are not counted again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Passes:
    forward: int = 0  # samples through a top-level forward
    gradient: int = 0  # of those, with gradients enabled

    def as_dict(self) -> dict[str, int]:
        return {"forward_passes": self.forward, "gradient_passes": self.gradient}


_state = threading.local()


def _batch(args: tuple[Any, ...]) -> int:
    first = args[0] if args else None
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 1


@contextmanager
def count_passes() -> Iterator[Passes]:
    """Count the model passes of everything run inside the block (this thread only)."""
    passes = Passes()
    _state.depth = 0

    def pre(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if getattr(_state, "passes", None) is not passes:
            return
        if _state.depth == 0:
            n = _batch(args)
            passes.forward += n
            passes.gradient += n if torch.is_grad_enabled() else 0
        _state.depth += 1

    def post(_module: nn.Module, _args: tuple[Any, ...], _out: Any) -> None:
        if getattr(_state, "passes", None) is passes:
            _state.depth -= 1

    _state.passes = passes
    handles = [nn.modules.module.register_module_forward_pre_hook(pre),
               nn.modules.module.register_module_forward_hook(post, always_call=True)]
    try:
        yield passes
    finally:
        for h in handles:
            h.remove()
        _state.passes = None
