"""Counting wrappers: how many forward passes, backward passes and queries an attack spent.

``CountingModel`` wraps any ``nn.Module``. Every forward adds one forward pass to each sample in
the batch; a backward that reaches the output adds one backward pass to each sample of that
batch. Counts are kept per original sample: an attack that works on a subset of the
batch says which samples it is passing with ``attribute(model, index)``; attacks that always
pass the whole batch need not do anything. With ``max_queries`` the wrapper refuses (raises
``QueryBudgetExceeded``) a forward that would take any sample past its budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.batch import Batch, batch_size
from bastion.errors import QueryBudgetExceeded


@dataclass(frozen=True)
class Counts:
    """Per-sample pass counts, each an ``(N,)`` int64 tensor on the CPU."""

    forward: Tensor
    backward: Tensor

    @property
    def total_forward(self) -> int:
        return int(self.forward.sum())

    @property
    def total_backward(self) -> int:
        return int(self.backward.sum())


class CountingModel(nn.Module):
    """Wraps ``model`` and counts forward/backward passes per sample of an ``n``-sample batch."""

    def __init__(self, model: nn.Module, n: int, *, max_queries: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.n = n
        self.max_queries = max_queries
        self._forward_counts = torch.zeros(n, dtype=torch.long)
        self._backward_counts = torch.zeros(n, dtype=torch.long)
        # Passes not yet added to the counts: [rows, version, copy, passes] runs, one per stretch of calls with
        # the same rows tensor. An attack calls the model once per iteration with the rows of its working batch,
        # which change only when points leave it, so tallying in Python and adding once per stretch saves two
        # tensor operations per forward and per backward pass (they matter on small batches).
        self._pending: dict[str, list[list]] = {"forward": [], "backward": []}
        self._index: Tensor | None = None
        self._all = torch.arange(n)  # the rows of a whole-batch call (one tensor, so such calls tally in one run)

    @property
    def forward_counts(self) -> Tensor:
        self._flush("forward")
        return self._forward_counts

    @forward_counts.setter
    def forward_counts(self, value: Tensor) -> None:
        self._flush("forward")
        self._forward_counts = value

    @property
    def backward_counts(self) -> Tensor:
        self._flush("backward")
        return self._backward_counts

    def counts(self) -> Counts:
        return Counts(self.forward_counts.clone(), self.backward_counts.clone())

    def _tally(self, kind: str, rows: Tensor) -> None:
        runs = self._pending[kind]
        # The same tensor object, not written to since (its version counter): the same rows. The run holds the
        # tensor, so `is` cannot match a new tensor at a recycled address; the copy is what gets counted.
        if runs and runs[-1][0] is rows and runs[-1][1] == rows._version:
            runs[-1][3] += 1
        else:
            if len(runs) >= 64:  # an attack whose rows change at every call: keep the list short
                self._flush(kind)
            runs.append([rows, rows._version, rows.clone(), 1])

    def _flush(self, kind: str) -> None:
        runs = self._pending[kind]
        if not runs:
            return
        counts = self._forward_counts if kind == "forward" else self._backward_counts
        for _, _, rows, passes in runs:
            counts.index_add_(0, rows, torch.full_like(rows, passes))
        runs.clear()

    def _rows(self, batch: int) -> Tensor:
        if self._index is not None:
            if self._index.numel() != batch:
                raise RuntimeError(
                    f"attribute() was given {self._index.numel()} indices but the model got a batch of {batch}."
                )
            return self._index
        if batch == self.n:
            return self._all
        raise RuntimeError(
            f"CountingModel was built for {self.n} samples but received a batch of {batch}; "
            "wrap the call in `with attribute(model, index):` to say which samples it holds."
        )

    def forward(self, x: Batch) -> Tensor:
        rows = self._rows(batch_size(x))
        if self.max_queries is not None:
            spent = self.forward_counts.index_select(0, rows)
            if (spent >= self.max_queries).any():
                raise QueryBudgetExceeded(
                    f"Query budget of {self.max_queries} per sample is spent for "
                    f"{int((spent >= self.max_queries).sum())} sample(s); raise max_queries or stop the attack."
                )
        self._tally("forward", rows)
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._backward_hook(rows))
        return out

    def _backward_hook(self, rows: Tensor):
        def hook(grad: Tensor) -> None:
            # The backward runs for the whole batch that went forward, so every row pays for it.
            self._tally("backward", rows)

        return hook


def find_counter(model: nn.Module) -> CountingModel | None:
    """The ``CountingModel`` that ``model`` is or wraps (e.g. inside an EOT wrapper), if any."""
    if isinstance(model, CountingModel):  # the runner's case, once per attack iteration: skip the module walk
        return model
    return next((m for m in model.modules() if isinstance(m, CountingModel)), None)


@contextmanager
def attribute(model: nn.Module, index: Tensor) -> Iterator[None]:
    """Within this block, batch row ``i`` passed to ``model`` is original sample ``index[i]``.

    Finds a ``CountingModel`` inside wrappers; a no-op for models without one, so attacks may always use it.
    """
    counter = find_counter(model)
    if counter is None:
        yield
        return
    previous = counter._index
    counter._index = _as_rows(index)
    try:
        yield
    finally:
        counter._index = previous


@contextmanager
def attribution(model: nn.Module) -> Iterator[Callable[[Tensor], None]]:
    """``attribute`` for a loop whose rows change only now and then: yields ``point(index)``, which says which
    samples the batches from then on hold. Entering a context once per iteration costs more than the pass
    counting itself on small batches (tens of microseconds right after a backward pass on CPU)."""
    counter = find_counter(model)
    if counter is None:
        yield lambda index: None
        return
    previous = counter._index

    def point(index: Tensor) -> None:
        counter._index = _as_rows(index)

    try:
        yield point
    finally:
        counter._index = previous


def _as_rows(index: Tensor) -> Tensor:
    # An int64 CPU tensor is used as it is (integer tensors carry no autograd history), so an attack that passes
    # the same rows tensor every iteration lets the counter tally those passes in one run.
    return index if index.dtype == torch.long and index.device.type == "cpu" else index.to("cpu", torch.long)
