"""Checks on user input, each failing with one message that names the fix."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from bastion.batch import Batch, leaves, take
from bastion.errors import InvalidInputError
from bastion.threats import Threat


def check_inputs(inputs: Tensor, threat: Threat) -> None:
    """The threat's own check of the inputs (for an Lp threat: finite floats inside the box)."""
    threat.validate(inputs)


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


def probe_model(model: nn.Module, inputs: Batch) -> int:
    """Run one sample through the model; return its number of classes or explain a shape mismatch."""
    try:
        with torch.no_grad():
            out = model(take(inputs, slice(0, 1)))
    except (RuntimeError, TypeError, KeyError, IndexError) as exc:
        shape = [tuple(t.shape[1:]) for t in leaves(inputs)]
        raise InvalidInputError(
            f"The model cannot take inputs of shape {shape[0] if len(shape) == 1 else shape} per sample "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). Use the data the model was trained "
            "on, or reshape the inputs."
        ) from None
    if not isinstance(out, Tensor):
        raise InvalidInputError(f"The model must return a tensor of logits (N, classes); it returned a "
                                f"{type(out).__name__}. Wrap it so that forward returns the logits.")
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
