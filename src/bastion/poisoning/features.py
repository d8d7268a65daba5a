"""Where the poisoning algorithms look inside a model: the penultimate representation (the input of the last
``nn.Linear``) and the last convolution. Found by hooks on any model, not by assuming a layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError


def last_of(model: nn.Module, kind: type[nn.Module]) -> nn.Module:
    """The last submodule of type ``kind`` in registration order (one clear error if there is none)."""
    found = [m for m in model.modules() if isinstance(m, kind)]
    if not found:
        raise InvalidInputError(f"This defense needs a model with an {kind.__name__} layer; "
                                f"{type(model).__name__} has none.")
    return found[-1]


def _captured(model: nn.Module, layer: nn.Module, x: Tensor, *, output: bool, batch_size: int) -> Tensor:
    chunks: list[Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        chunks.append((out if output else inputs[0]).detach().flatten(1) if not output else out.detach())

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def penultimate(model: nn.Module, x: Tensor, batch_size: int = 128) -> Tensor:
    """The input of the model's last ``nn.Linear`` for every row of ``x``: (n, features)."""
    return _captured(model, last_of(model, nn.Linear), x, output=False, batch_size=batch_size)


def penultimate_differentiable(model: nn.Module, x: Tensor) -> Tensor:
    """As :func:`penultimate`, keeping the graph (for attacks that optimise in feature space)."""
    out: list[Tensor] = []
    handle = last_of(model, nn.Linear).register_forward_hook(lambda _m, inputs, _o: out.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return out[0].flatten(1)


def last_conv_activations(model: nn.Module, x: Tensor, batch_size: int = 128) -> Tensor:
    """The output of the model's last ``nn.Conv2d`` (n, channels, h, w)."""
    return _captured(model, last_of(model, nn.Conv2d), x, output=True, batch_size=batch_size)
