"""Black-box targets: a model seen only through its outputs, with a hard per-sample query budget.

Both kinds are ``nn.Module``\\ s, so every attack takes them in place of ``model``:

* ``ScoreTarget`` answers scores: whatever the backend gives (logits, or probabilities for a remote
  endpoint that sends them). Score-based attacks (``access="score"``) run on it.
* ``LabelTarget`` answers the predicted label only. ``target.labels(x)`` returns ``(N,)`` int64 labels.
  ``target(x)`` returns the *one-hot* encoding of those labels: it carries no margin information but lets
  code that only takes an ``argmax`` (the runner, the contract tests) work unchanged. With
  ``strict=True`` calling ``target(x)`` raises ``ScoresUnavailableError`` instead, so an attack that
  would read scores fails loudly. Decision-based attacks (``access="decision"``) go through
  ``query_labels(model, x)``, which calls ``model.labels`` when the model has it and otherwise takes the
  ``argmax`` of ``model(x)`` (so they also run on a plain ``nn.Module``).

Outputs are computed without autograd and detached: a black-box target gives no gradients.

Counting follows ``bastion.oracle.CountingModel`` (targets are ``CountingModel``\\ s, so
``attribute(target, index)`` says which original sample each row of a sub-batch is; rows may repeat,
as when an attack sends 50 perturbed copies of one sample). One input evaluated is one query for the
sample it belongs to. ``max_queries`` is a hard per-sample limit: a batch that would take any sample
past it is refused whole with ``QueryBudgetExceeded`` before anything is sent to the backend.

Backends: any ``nn.Module`` or callable mapping a batch to ``(N, C)`` scores or ``(N,)`` labels, for
example a local model or ``bastion.blackbox.http.RemoteModel`` (a JSON endpoint). ``batch_size``
splits large query batches into several backend calls.

Partial results: the attacks of ``bastion.attacks`` stop cleanly and return their best-so-far
examples when the target refuses a query for budget; when the remote backend fails they re-raise
``RemoteTargetError`` with the best-so-far examples in ``error.partial`` (see ``partial_results``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import BastionError, QueryBudgetExceeded
from bastion.oracle import CountingModel

logger = logging.getLogger(__name__)

Backend = nn.Module | Callable[[Tensor], Tensor]


class RemoteTargetError(BastionError):
    """A remote target failed (unreachable, timeout, HTTP error, malformed answer).

    ``url`` and ``status`` (HTTP status or None) say where and how; ``partial`` holds the attack's
    best-so-far examples (inputs' shape) when the error went through an attack, else None.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.partial: Tensor | None = None


class ScoresUnavailableError(BastionError):
    """Scores were asked of a target that only gives labels."""


class _CallableModule(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class _Target(CountingModel):
    """Shared query path: per-sample charge, hard budget, batching, no autograd."""

    def __init__(self, backend: Backend, n: int, *, max_queries: int | None, batch_size: int | None) -> None:
        module = backend if isinstance(backend, nn.Module) else _CallableModule(backend)
        super().__init__(module, n, max_queries=max_queries)
        if max_queries is not None and max_queries < 1:
            raise ValueError("max_queries must be at least 1")
        self.batch_size = batch_size

    def remaining(self) -> Tensor | None:
        """Queries each sample may still spend, ``(n,)``; None without a budget."""
        if self.max_queries is None:
            return None
        return (self.max_queries - self.forward_counts).clamp_min(0)

    def _charge(self, batch: int) -> None:
        rows = self._rows(batch)
        add = torch.bincount(rows, minlength=self.n)
        if self.max_queries is not None:
            over = (self.forward_counts + add) > self.max_queries
            if over.any():
                raise QueryBudgetExceeded(
                    f"Query budget of {self.max_queries} per sample would be exceeded for "
                    f"{int(over.sum())} sample(s); the batch was not sent. Raise max_queries or lower the "
                    "attack's own query budget."
                )
        self.forward_counts += add

    def _query(self, x: Tensor) -> Tensor:
        self._charge(x.shape[0])
        step = self.batch_size or max(x.shape[0], 1)
        with torch.no_grad():
            parts = [self.model(x[i:i + step]) for i in range(0, x.shape[0], step)]
        out = torch.cat(parts) if parts else self.model(x)
        return out.detach().to(x.device)


class ScoreTarget(_Target):
    """A target that answers scores, ``(N, C)``. See the module docstring.

    Args:
        backend: local model or callable (e.g. ``RemoteModel``) returning ``(N, C)`` scores.
        n: number of original samples the attack works on (counts are kept per sample).
        max_queries: hard per-sample query budget, or None.
        batch_size: largest batch sent to the backend in one call, or None for no limit.
    """

    def __init__(self, backend: Backend, n: int, *, max_queries: int | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(backend, n, max_queries=max_queries, batch_size=batch_size)

    def forward(self, x: Tensor) -> Tensor:
        out = self._query(x)
        if out.dim() != 2:
            raise ScoresUnavailableError(
                "The backend returned labels, not scores; wrap it in LabelTarget and use a decision-based "
                "attack (hopskipjump, boundary)."
            )
        return out

    def labels(self, x: Tensor) -> Tensor:
        return self.forward(x).argmax(1)


class LabelTarget(_Target):
    """A target that answers the top-1 label only. See the module docstring.

    Args:
        backend: local model or callable returning ``(N, C)`` scores (reduced to labels here, before the
            attack sees them) or ``(N,)`` labels.
        n, max_queries, batch_size: as for ``ScoreTarget``.
        num_classes: needed for the one-hot ``forward`` when the backend returns labels only.
        strict: if True, ``forward`` raises ``ScoresUnavailableError``; only ``labels`` answers.
    """

    def __init__(self, backend: Backend, n: int, *, max_queries: int | None = None,
                 batch_size: int | None = None, num_classes: int | None = None, strict: bool = False) -> None:
        super().__init__(backend, n, max_queries=max_queries, batch_size=batch_size)
        self.num_classes = num_classes
        self.strict = strict

    def labels(self, x: Tensor) -> Tensor:
        out = self._query(x)
        if out.dim() == 2:
            if self.num_classes is None:
                self.num_classes = out.shape[1]
            out = out.argmax(1)
        return out.long()

    def forward(self, x: Tensor) -> Tensor:
        if self.strict:
            raise ScoresUnavailableError(
                "This target answers labels only (LabelTarget(strict=True)); call target.labels(x) or use a "
                "decision-based attack (hopskipjump, boundary)."
            )
        labels = self.labels(x)
        if self.num_classes is None:
            raise ScoresUnavailableError(
                "A label-only backend needs LabelTarget(..., num_classes=C) to answer one-hot outputs."
            )
        return F.one_hot(labels, self.num_classes).to(x.dtype)


def query_labels(model: nn.Module, x: Tensor) -> Tensor:
    """Predicted labels ``(N,)`` using only label access when the model offers it (``model.labels``)."""
    labels = getattr(model, "labels", None)
    with torch.no_grad():
        out = labels(x) if callable(labels) else model(x).argmax(1)
    return out.to(x.device)


def query_scores(model: nn.Module, x: Tensor) -> Tensor:
    """Scores ``(N, C)`` without autograd."""
    with torch.no_grad():
        return model(x).detach()


@contextmanager
def partial_results(best: Tensor) -> Iterator[None]:
    """Run an attack loop that updates ``best`` in place, keeping what it found if the target stops.

    ``QueryBudgetExceeded`` ends the block quietly (the attack then returns ``best``);
    ``RemoteTargetError`` is re-raised with a copy of ``best`` in ``error.partial``.
    """
    try:
        yield
    except QueryBudgetExceeded as err:
        logger.info("attack stopped by the target's query budget: %s", err)
    except RemoteTargetError as err:
        err.partial = best.detach().clone()
        raise
