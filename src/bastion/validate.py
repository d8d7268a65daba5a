"""Checks on user input, each failing with one message that names the fix."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.threat import LpThreat


def check_inputs(inputs: Tensor, threat: LpThreat) -> None:
    """Finite values inside the threat model's box."""
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must be a floating-point tensor; got {inputs.dtype}. Convert with .float().")
    bad = ~torch.isfinite(inputs)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise InvalidInputError(
            f"inputs contain {int(bad.sum())} NaN/inf values (samples {rows}...); clean or drop those samples."
        )
    lower, upper = threat.bounds(inputs)
    tol = 1e-6
    below, above = inputs < lower - tol, inputs > upper + tol
    if below.any() or above.any():
        lo, hi = float(inputs.min()), float(inputs.max())
        where = "" if not threat.per_feature else \
            f" per-feature ({int((below | above).flatten(1).any(0).sum())} features out of range)"
        declared = f"[{threat.lower}, {threat.upper}]" if not threat.per_feature else "(per-feature bounds)"
        raise InvalidInputError(
            f"inputs lie outside the declared bounds {declared}{where} (min {lo:.4g}, max {hi:.4g}). "
            "bastion models take unnormalized inputs: move normalization into the model "
            "(bastion.zoo.Normalize) or declare the real bounds (--lower/--upper, LpThreat(lower=, upper=))."
        )


def check_labels(labels: Tensor, n: int, num_classes: int) -> None:
    if labels.dim() != 1 or labels.shape[0] != n:
        raise InvalidInputError(f"labels must have shape ({n},), one class index per input; got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InvalidInputError(f"labels must be integer class indices; got {labels.dtype}. Convert with .long().")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidInputError(
            f"labels must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs; "
            f"got min {int(labels.min())}, max {int(labels.max())}. Check the data set matches the model."
        )


def probe_model(model: nn.Module, inputs: Tensor) -> int:
    """Run one sample through the model; return its number of classes or explain a shape mismatch."""
    try:
        with torch.no_grad():
            out = model(inputs[:1])
    except RuntimeError as exc:
        raise InvalidInputError(
            f"The model cannot take inputs of shape {tuple(inputs.shape[1:])} per sample ({str(exc).splitlines()[0]}). "
            "Use the data set the model was trained on, or reshape the inputs."
        ) from None
    if out.dim() != 2:
        raise InvalidInputError(f"The model must return logits of shape (N, classes); it returned {tuple(out.shape)}.")
    return int(out.shape[1])


def ensure_eval(model: nn.Module) -> bool:
    """Put a model left in train mode into eval mode, with a warning. Returns whether it was training."""
    if model.training:
        warnings.warn(
            "The model was in train mode (dropout/batch norm would make results random and wrong); "
            "evaluating it in eval mode. Call model.eval() before attacking to silence this.",
            stacklevel=3,
        )
        model.eval()
        return True
    return False
