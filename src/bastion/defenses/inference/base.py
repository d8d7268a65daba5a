"""The inference-time defense registry and the pieces every defense shares.

A defense is an ``nn.Module`` that wraps a classifier (inputs in the data set's bounds, logits out), so
every attack and the evaluation run on it unchanged. A registry entry is a builder
``build(model, **params) -> nn.Module`` with metadata. Builders that need clean data (a detector's
threshold, a gating network, distillation) take it as ``data=Split`` and say so with ``needs_data=True``.

Preprocessors are separate *leaf* modules (``Preprocessed.preprocess``) so that the evaluation's
diagnostics (``bastion.evaluation.diagnostics.find_nondifferentiable``) find the ones that block gradients
and the adaptive evaluation replaces them by BPDA. A non-differentiable step returns its value with an
exactly-zero gradient (``zero_gradient``) -- the a.e. derivative of a piecewise-constant map -- rather
than cutting the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.registry import Registry

Kind = Literal["preprocessing", "detection", "ensemble", "purification", "distillation", "hybrid"]


@dataclass(frozen=True)
class DefenseSpec:
    """Registry entry. ``clean_drop`` is the documented worst clean-accuracy cost (absolute, e.g. 0.05)
    on the models it was checked on; the tests hold every defense to it."""

    name: str
    build: Callable[..., nn.Module]
    paper: str
    kind: Kind
    randomized: bool
    differentiable: bool
    description: str
    needs_data: bool = False
    clean_drop: float = 0.05

    def __call__(self, model: nn.Module, **params: Any) -> nn.Module:
        return self.build(model, **params)


DEFENSES: Registry[DefenseSpec] = Registry("defense", "bastion defend list")


def register_defense(name: str, *, paper: str, kind: Kind, randomized: bool, differentiable: bool,
                     description: str, needs_data: bool = False, clean_drop: float = 0.05
                     ) -> Callable[[Callable], Callable]:
    """Register a builder ``build(model, **params) -> nn.Module`` under ``name`` with its metadata."""
    return DEFENSES.decorator(name, lambda fn: DefenseSpec(name, fn, paper, kind, randomized, differentiable,
                                                           description, needs_data, clean_drop))


def build_defense(name: str, model: nn.Module, **params: Any) -> nn.Module:
    """Build the registered defense ``name`` around ``model``; returned in eval mode."""
    return DEFENSES.get(name).build(model, **params).eval()


def zero_gradient(value: Tensor, like: Tensor) -> Tensor:
    """``value`` in the forward pass, an exactly-zero gradient to ``like`` in the backward pass."""
    return value.detach() + 0.0 * like


def seeded(seed: int) -> torch.Generator:
    """The generator a randomized defense owns (CPU; noise is drawn there and moved to the input's device)."""
    return torch.Generator().manual_seed(int(seed))


def randn(shape: torch.Size | tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(tuple(shape), generator=generator).to(like)


class Preprocessed(nn.Module):
    """``model(preprocess(x))``. ``preprocess`` is a leaf (or small) module the diagnostics can inspect."""

    def __init__(self, preprocess: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.preprocess(x))


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's final ``nn.Linear`` (its input is the penultimate feature vector)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        from bastion.errors import InvalidInputError

        raise InvalidInputError("This defense reads penultimate features and needs a model whose last layer is an "
                                "nn.Linear; wrap your classifier so its head is one.")
    return linears[-1]


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass returning (logits, penultimate features) via a hook on the last linear layer."""
    seen: list[Tensor] = []
    handle = last_linear(model).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)


def with_reject(logits: Tensor, score: Tensor, threshold: Tensor, sharpness: float) -> Tensor:
    """Append the reject logit: it beats every class exactly when ``score > threshold``.

    ``max(logits) + sharpness * (score - threshold)`` keeps the detector differentiable, so adaptive
    attacks can lower the score while changing the class (Carlini & Wagner 2017, "Adversarial examples
    are not easily detected").
    """
    reject = logits.max(1).values + sharpness * (score - threshold)
    return torch.cat([logits, reject[:, None]], 1)


@torch.no_grad()
def false_rejection_rate(defended: nn.Module, x: Tensor, batch_size: int = 500) -> float:
    """Fraction of clean inputs ``x`` a detector-defended model rejects (its clean false-positive rate)."""
    reject = getattr(defended, "reject_class", None)
    if reject is None:
        return 0.0
    hits = sum(int((defended(x[i:i + batch_size]).argmax(1) == reject).sum()) for i in range(0, len(x), batch_size))
    return hits / max(len(x), 1)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Clean accuracy; for a detector-defended model a rejected input counts as wrong."""
    hits = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(len(x), 1)


def median_latency(model: nn.Module, x: Tensor, repeats: int = 5) -> float:
    """Median wall time of ``repeats`` forward passes of ``model`` on ``x`` (after one warm-up), in seconds."""
    import statistics
    import time

    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
