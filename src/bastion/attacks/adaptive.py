"""Building blocks of adaptive attacks: BPDA and EOT, as model wrappers.

Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML. Defenses that break gradients (shattered gradients:
quantization, JPEG, thermometer encoding) are attacked with BPDA, the Backward Pass Differentiable
Approximation: the forward pass runs the real, non-differentiable module and the backward pass
uses the gradient of a differentiable approximation (the identity for preprocessors that keep the
input close: x ~ g(x)). Randomized defenses are attacked with EOT, Expectation over
Transformation: the gradient of the expected loss over the defense's randomness.

Where the non-differentiable step is a torch operation inside a module's ``forward`` (``self.net(torch.round(x))``)
rather than a module of its own, ``straight_through(model)`` runs the model with every step operation (round,
floor, ceil, trunc, sign) replaced in the backward pass by the identity, the same BPDA at the operation.

All return ``nn.Module``s, so every gradient attack runs on them unchanged, e.g.
``pgd(nn.Sequential(bpda(Quantize()), model), x, y, threat)`` or ``apgd(eot(noisy_model, samples=20), ...)``.
Neither is a registered attack.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from bastion.errors import InvalidInputError


class BPDA(nn.Module):
    """Forward: ``module(x)``. Backward: the gradient of ``approx(x)`` (identity when ``approx`` is None).

    Implemented as ``approx(x) + (module(x) - approx(x)).detach()``: the value is exactly
    ``module(x)`` and only ``approx`` is differentiated. ``approx`` must return outputs of
    ``module``'s shape; a whole defended classifier can use its undefended classifier as ``approx``.
    """

    def __init__(self, module: nn.Module, approx: nn.Module | None = None) -> None:
        super().__init__()
        self.module = module
        self.approx = approx if approx is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return out
        surrogate = self.approx(x)
        if surrogate.shape != out.shape:
            raise InvalidInputError(
                f"BPDA's approximation returns shape {tuple(surrogate.shape)} but the module returns "
                f"{tuple(out.shape)}; pass an approx with the module's output shape (the identity only "
                "suits preprocessors that keep the input's shape)."
            )
        return surrogate + (out - surrogate).detach()


class EOT(nn.Module):
    """Averages ``samples`` forward passes of a randomized ``model``.

    ``average="logits"`` (default) returns the mean logits, the common implementation; its gradient is
    the mean of the per-sample logit gradients, and for margin-type losses it is the EOT gradient of
    the paper up to the loss's non-linearity. ``average="probs"`` returns the log of the mean softmax
    probabilities, i.e. the logits of the expected classifier (softmax of it gives the mean
    probabilities), whose cross-entropy is the loss of the randomized model's average prediction.
    The samples run one after another, so memory stays that of one pass.
    """

    def __init__(self, model: nn.Module, samples: int = 20, average: str = "logits") -> None:
        super().__init__()
        if samples < 1:
            raise InvalidInputError(f"EOT needs at least one sample; got samples={samples}.")
        if average not in ("logits", "probs"):
            raise InvalidInputError(f"EOT average must be 'logits' or 'probs'; got {average!r}.")
        self.model = model
        self.samples = samples
        self.average = average

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.model(x) for _ in range(self.samples)]
        if self.average == "logits":
            return torch.stack(outs).mean(0)
        logp = torch.stack([o.log_softmax(-1) for o in outs])
        return torch.logsumexp(logp, 0) - math.log(self.samples)


def bpda(module: nn.Module, approx: nn.Module | None = None) -> nn.Module:
    """BPDA wrapper: forward runs ``module``, backward differentiates ``approx`` (identity if None)."""
    return BPDA(module, approx)


def eot(model: nn.Module, samples: int = 20, *, average: str = "logits") -> nn.Module:
    """EOT wrapper: the average of ``samples`` forward passes of the randomized ``model``."""
    return EOT(model, samples, average)


STEP_OPS = {torch.round, torch.floor, torch.ceil, torch.trunc, torch.sign, torch.Tensor.round, torch.Tensor.floor,
            torch.Tensor.ceil, torch.Tensor.trunc, torch.Tensor.sign}


class StraightThroughOps(TorchFunctionMode):
    """While active, a step operation applied to a tensor that needs a gradient returns its value with the
    identity's gradient (``x + (op(x) - x).detach()``); ``seen`` names the operations it replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        x = args[0] if args else None
        if func in STEP_OPS and isinstance(x, Tensor) and x.requires_grad and isinstance(out, Tensor) \
                and out.shape == x.shape and torch.is_grad_enabled():
            self.seen.add(getattr(func, "__name__", str(func)))
            return x + (out - x).detach()
        return out


class StraightThrough(nn.Module):
    """``model`` with its step operations straight-through (see ``StraightThroughOps``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with StraightThroughOps():
            return self.model(x)


def straight_through(model: nn.Module) -> nn.Module:
    """BPDA at the step operations inside ``model``'s forward (round, floor, ceil, trunc, sign)."""
    return StraightThrough(model)
