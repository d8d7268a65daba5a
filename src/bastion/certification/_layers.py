"""Shared plumbing of the bound-propagation certifiers (``ibp``, ``crown``).

A certifiable model is an ``nn.Sequential`` (nested ones are flattened) of supported layers. An
*affine normalization* is any leaf module with ``mean`` and ``std`` tensor attributes computing
``(x - mean) / std`` elementwise, such as ``bastion.zoo.architectures.Normalize``; its exact scale and
shift are read off by evaluating it at 0 and 1, so its broadcasting rules do not matter here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import InvalidInputError

_PASS_THROUGH = (nn.Identity, nn.Dropout)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def is_normalization(module: nn.Module) -> bool:
    """The affine ``Normalize`` protocol: a leaf with tensor ``mean`` and ``std``: ``(x - mean) / std``."""
    return (
        isinstance(getattr(module, "mean", None), Tensor)
        and isinstance(getattr(module, "std", None), Tensor)
        and not any(True for _ in module.children())
    )


def flatten_layers(model: nn.Module, supported: tuple[type, ...], method: str) -> list[nn.Module]:
    """The leaf layers of a (nested) ``nn.Sequential`` in order; a clear error on anything else."""
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in flatten_layers(child, supported, method)]
    if isinstance(model, supported) or is_normalization(model):
        if isinstance(model, _BATCHNORM) and model.training:
            raise InvalidInputError(
                f"{method} bounds use a BatchNorm's running statistics, but {model!r} is in train mode; "
                "call model.eval() first."
            )
        if isinstance(model, _PASS_THROUGH[1]) and model.training and model.p > 0:
            raise InvalidInputError(
                f"{model!r} is in train mode; call model.eval() before computing {method} bounds."
            )
        return [model]
    names = ", ".join(t.__name__ for t in supported) + ", an affine Normalize (mean/std buffers)"
    raise InvalidInputError(
        f"{method} cannot bound layer type {type(model).__name__}. "
        f"Supported: nested nn.Sequential of {names}. Rewrite the model as an nn.Sequential of "
        "these layers (custom forward() methods cannot be traced)."
    )


def elementwise_affine(layer: nn.Module, shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, shift) of one sample's shape, ``layer(x) = scale * x + shift`` (eval BatchNorm, Normalize)."""
    if isinstance(layer, _BATCHNORM):
        if layer.running_var is None or layer.running_mean is None:
            raise InvalidInputError(
                f"{layer!r} keeps no running statistics (track_running_stats=False), so it is not a fixed "
                "affine map; certify a model whose BatchNorm layers track running statistics."
            )
        scale = 1.0 / torch.sqrt(layer.running_var.to(like) + layer.eps)
        shift = -layer.running_mean.to(like) * scale
        if layer.affine:
            scale, shift = scale * layer.weight, shift * layer.weight + layer.bias
        view = (-1,) + (1,) * (len(shape) - 1)
        return scale.view(view).expand(shape), shift.view(view).expand(shape)
    zero = torch.zeros((1, *shape), device=like.device, dtype=like.dtype)
    shift = layer(zero)[0]
    return layer(zero + 1)[0] - shift, shift


def conv_transpose(a: Tensor, conv: nn.Conv2d | nn.AvgPool2d, in_shape: tuple[int, ...]) -> Tensor:
    """``a @ W`` for the linear map of ``conv`` (bias excluded): rows (M, C_out, H', W') to (M, *in_shape).

    An AvgPool2d is the depthwise convolution with weights ``1 / (kh * kw)``.
    """
    if isinstance(conv, nn.AvgPool2d):
        weight, stride, pad, dil, groups = _avgpool_params(conv, in_shape[0], a)
    else:
        assert not isinstance(conv.padding, str)
        weight, stride, pad, dil, groups = conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups
    k = weight.shape[-2:]
    out_pad = tuple(
        in_shape[1 + i] - ((o - 1) * stride[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + 1)
        for i, o in enumerate(a.shape[-2:])
    )
    return F.conv_transpose2d(a, weight, None, stride, pad, out_pad, groups, dil)


def check_conv(conv: nn.Conv2d, method: str) -> None:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise InvalidInputError(
            f"{method} supports Conv2d with integer zero padding only; got padding={conv.padding!r}, "
            f"padding_mode={conv.padding_mode!r}. Use explicit integer padding."
        )


def check_avgpool(pool: nn.AvgPool2d, method: str) -> None:
    padded = any(nn.modules.utils._pair(pool.padding))
    if pool.ceil_mode or pool.divisor_override is not None or (padded and not pool.count_include_pad):
        raise InvalidInputError(
            f"{method} supports AvgPool2d with the default ceil_mode, divisor_override and count_include_pad "
            "only; rebuild the layer with those defaults."
        )


def _avgpool_params(
    pool: nn.AvgPool2d, channels: int, like: Tensor
) -> tuple[Tensor, tuple[int, ...], tuple[int, ...], tuple[int, ...], int]:
    """(weight, stride, padding, dilation, groups) of the depthwise convolution equal to ``pool``."""
    pair = nn.modules.utils._pair
    k = pair(pool.kernel_size)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    weight = torch.full((channels, 1, *k), 1.0 / math.prod(k), device=like.device, dtype=like.dtype)
    return weight, stride, pair(pool.padding), (1, 1), channels


def margin_spec(labels: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """The margin specification ``C`` of shape (N, K-1, K): rows ``e_y - e_j`` for every ``j != y``."""
    n = labels.shape[0]
    eye = torch.eye(num_classes, device=like.device, dtype=like.dtype)
    rows = eye[labels][:, None, :] - eye[None, :, :]  # (N, K, K): e_y - e_j
    keep = torch.ones(n, num_classes, dtype=torch.bool, device=like.device)
    keep[torch.arange(n, device=like.device), labels] = False
    return rows[keep].view(n, num_classes - 1, num_classes)


def input_box(x: Tensor, eps: float | Tensor, lower: float, upper: float) -> tuple[Tensor, Tensor]:
    """The L-inf ball of per-sample radius ``eps`` around ``x`` intersected with ``[lower, upper]``."""
    e = torch.as_tensor(eps, device=x.device, dtype=x.dtype)
    if e.dim() == 1:
        e = e.view(-1, *([1] * (x.dim() - 1)))
    if (e < 0).any() or not torch.isfinite(e).all():
        raise InvalidInputError(f"eps must be finite and non-negative; got {eps}.")
    return (x - e).clamp(lower, upper), (x + e).clamp(lower, upper)


def check_finite(x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise InvalidInputError("Inputs contain NaN or infinite values; clean them before certifying.")
