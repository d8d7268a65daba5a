"""CROWN and CROWN-IBP: backward linear-relaxation bound propagation for sequential ReLU networks.

Zhang, Weng, Chen, Hsieh & Daniel 2018, "Efficient Neural Network Robustness Certification with General
Activation Functions", NeurIPS (CROWN); Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning & Hsieh 2020,
"Towards Stable and Efficient Training of Verifiably Robust Neural Networks", ICLR (CROWN-IBP).

A linear specification ``C f(x)`` is bounded by carrying the matrix ``A = C`` backwards through the
network: an affine layer ``W h + b`` turns ``A`` into ``A W`` and adds ``A b`` to the bias; a ReLU with
pre-activation bounds ``l < 0 < u`` is relaxed by the line ``u (z - l) / (u - l)`` from above and by
``alpha z`` from below with CROWN's adaptive slope ``alpha = 1 if u > -l else 0`` (stable neurons are
exact), choosing for each entry of ``A`` the side that keeps the bound valid. At the input, the linear
function is minimized in closed form over the L-inf box (``A mid - |A| rad``) or the L2 ball
(``A x0 - eps ||A||_2``). Pre-activation bounds of the ReLUs come from CROWN itself, layer by layer
(``intermediate="crown"``, full CROWN; one backward pass per ReLU layer with an identity specification,
fine for small networks) or from IBP (``intermediate="ibp"``, CROWN-IBP).

Supported layers: Linear, Conv2d, ReLU, AvgPool2d, Flatten, BatchNorm1d/2d (eval), an affine Normalize,
Identity, Dropout (eval). MaxPool2d is rejected: its linear relaxation is not implemented here (use
``bastion.certification.ibp``, which bounds it exactly as a monotone map).

With ``intersect_ibp=True`` (default) every CROWN bound is intersected with the IBP bound of the same
quantity; both are sound, so the intersection is too, and it is never looser than either. Pure CROWN is
usually much tighter than IBP but not provably so on every neuron (a slope-1 lower relaxation can lose
against IBP's ``relu(l) = 0``), and it is markedly looser on IBP-trained networks (Zhang et al. 2020).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.certification._layers import (
    check_avgpool,
    check_conv,
    check_finite,
    conv_transpose,
    elementwise_affine,
    flatten_layers,
    input_box,
    margin_spec,
)
from bastion.certification.ibp import layer_intervals, spec_lower_bounds, worst_case_logits
from bastion.errors import InvalidInputError

SUPPORTED: tuple[type, ...] = (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.AvgPool2d, nn.Flatten,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout,
)
Intermediate = Literal["crown", "ibp"]
Norm = Literal["linf", "l2"]
Relaxation = tuple[Tensor, Tensor, Tensor]  # lower slope, upper slope, upper intercept
_CHUNK_ELEMENTS = 2**24  # identity-specification rows are processed in chunks of about this many floats


def crown_layers(model: nn.Module) -> list[nn.Module]:
    """The model's layers in order, or an error naming the first layer CROWN cannot bound."""
    try:
        layers = flatten_layers(model, SUPPORTED, "CROWN")
    except InvalidInputError as err:
        if any(isinstance(m, nn.MaxPool2d) for m in model.modules()):
            raise InvalidInputError(
                f"{err} CROWN has no MaxPool2d relaxation here; "
                "use bastion.certification.ibp for max-pooling models."
            ) from None
        raise
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            check_conv(layer, "CROWN")
        elif isinstance(layer, nn.AvgPool2d):
            check_avgpool(layer, "CROWN")
    return layers


def relu_relaxation(lo: Tensor, hi: Tensor) -> Relaxation:
    """CROWN's bounds ``d_low z <= relu(z) <= d_up z + b_up`` on ``[lo, hi]`` (adaptive lower slope)."""
    unstable = (lo < 0) & (hi > 0)
    active = (lo >= 0).to(lo.dtype)
    slope = hi / (hi - lo).clamp_min(1e-12)
    d_up = torch.where(unstable, slope, active)
    b_up = torch.where(unstable, -lo * slope, torch.zeros_like(lo))
    d_low = torch.where(unstable, (hi > -lo).to(lo.dtype), active)
    return d_low, d_up, b_up


def _backward(
    layers: list[nn.Module], shapes: list[tuple[int, ...]], relax: dict[int, Relaxation], a: Tensor
) -> tuple[Tensor, Tensor]:
    """Carry ``a`` (N, M, *output shape) back to the input: ``a f(x) >= A x + bias`` on the input set."""
    n, m = a.shape[:2]
    bias = a.new_zeros(n, m)
    for i in reversed(range(len(layers))):
        layer, in_shape = layers[i], shapes[i]
        if isinstance(layer, nn.Linear):
            if layer.bias is not None:
                bias = bias + a @ layer.bias
            a = a @ layer.weight
        elif isinstance(layer, (nn.Conv2d, nn.AvgPool2d)):
            if isinstance(layer, nn.Conv2d) and layer.bias is not None:
                bias = bias + a.sum((-2, -1)) @ layer.bias
            a = conv_transpose_rows(a, layer, in_shape)
        elif isinstance(layer, nn.ReLU):
            d_low, d_up, b_up = (r[:, None] for r in relax[i])
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            bias = bias + (neg * b_up).flatten(2).sum(2)
            a = pos * d_low + neg * d_up
        elif isinstance(layer, nn.Flatten):
            a = a.reshape(n, m, *in_shape)
        elif not isinstance(layer, (nn.Identity, nn.Dropout)):  # BatchNorm (eval) or Normalize
            scale, shift = elementwise_affine(layer, in_shape, a)
            bias = bias + (a * shift).flatten(2).sum(2)
            a = a * scale
    return a, bias


def conv_transpose_rows(a: Tensor, conv: nn.Conv2d | nn.AvgPool2d, in_shape: tuple[int, ...]) -> Tensor:
    """``a @ W`` for a convolution's linear map, ``a`` of shape (N, M, C_out, H', W')."""
    n, m = a.shape[:2]
    return conv_transpose(a.reshape(n * m, *a.shape[2:]), conv, in_shape).view(n, m, *in_shape)


def _concretize(
    a: Tensor, bias: Tensor, x: Tensor, box: tuple[Tensor, Tensor], norm: Norm, eps: Tensor
) -> Tensor:
    """``min A x' + bias`` over the L-inf box (already clipped to the domain) or the L2 ball of ``eps``."""
    a = a.flatten(2)
    if norm == "linf":
        lo, hi = (b.flatten(1)[:, :, None] for b in box)
        return (a.clamp(min=0) @ lo + a.clamp(max=0) @ hi).squeeze(2) + bias
    return (a @ x.flatten(1)[:, :, None]).squeeze(2) - eps[:, None] * a.norm(dim=2) + bias


def _lower(ctx: dict, layers: list[nn.Module], relax: dict[int, Relaxation], spec: Tensor) -> Tensor:
    a, bias = _backward(layers, ctx["shapes"], relax, spec)
    return _concretize(a, bias, ctx["x"], ctx["box"], ctx["norm"], ctx["eps"])


def _intermediate(
    ctx: dict, layers: list[nn.Module], relax: dict[int, Relaxation], shape: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """Full-CROWN bounds on the output of ``layers`` (one identity-specification pass, chunked)."""
    x = ctx["x"]
    n, d = x.shape[0], math.prod(shape)
    widest = max(math.prod(s) for s in [*ctx["shapes"][: len(layers)], shape])
    rows = max(1, _CHUNK_ELEMENTS // (2 * n * widest))
    eye = torch.eye(d, device=x.device, dtype=x.dtype)
    lows, highs = [], []
    for start in range(0, d, rows):
        e = eye[start : start + rows]
        spec = torch.cat([e, -e]).view(1, -1, *shape).expand(n, -1, *shape)
        bound = _lower(ctx, layers, relax, spec)
        lows.append(bound[:, : e.shape[0]])
        highs.append(-bound[:, e.shape[0] :])
    return torch.cat(lows, 1).view(n, *shape), torch.cat(highs, 1).view(n, *shape)


def _spec_lower_bounds(
    model: nn.Module, x: Tensor, eps: float | Tensor, spec: Tensor, *, norm: Norm, lower: float, upper: float,
    intermediate: Intermediate, intersect_ibp: bool,
) -> Tensor:
    if norm not in ("linf", "l2"):
        raise InvalidInputError(f"CROWN supports norm 'linf' or 'l2'; got {norm!r}.")
    if intermediate not in ("crown", "ibp"):
        raise InvalidInputError(f"intermediate must be 'crown' or 'ibp'; got {intermediate!r}.")
    check_finite(x)
    layers = crown_layers(model)
    box = input_box(x, eps, lower, upper)  # contains the L2 ball as well
    ibp = layer_intervals(layers, *box)
    shapes = [tuple(b[0].shape[1:]) for b in ibp]
    eps_n = torch.as_tensor(eps, device=x.device, dtype=x.dtype).expand(x.shape[0])
    ctx = {"x": x, "box": box, "norm": norm, "eps": eps_n, "shapes": shapes}
    relax: dict[int, Relaxation] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.ReLU):
            continue
        lo, hi = ibp[i]
        if intermediate == "crown":
            c_lo, c_hi = _intermediate(ctx, layers[:i], relax, shapes[i])
            lo, hi = (torch.maximum(lo, c_lo), torch.minimum(hi, c_hi)) if intersect_ibp else (c_lo, c_hi)
        relax[i] = relu_relaxation(lo, hi)
    bound = _lower(ctx, layers, relax, spec)
    return torch.maximum(bound, spec_lower_bounds(layers, ibp, spec)) if intersect_ibp else bound


def crown_bounds(
    model: nn.Module,
    x: Tensor,
    eps: float | Tensor,
    *,
    norm: Norm = "linf",
    lower: float = 0.0,
    upper: float = 1.0,
    spec: Tensor | None = None,
    intermediate: Intermediate = "crown",
    intersect_ibp: bool = True,
) -> tuple[Tensor, Tensor]:
    """Bounds ``(lo, hi)`` of ``spec @ model(x')`` (or of ``model(x')``) for every ``x'`` in the ball.

    The ball is the ``norm`` ball of radius ``eps`` (float or per-sample ``(N,)``) around ``x``; for
    ``"linf"`` it is intersected with the box ``[lower, upper]``. ``spec`` is (M, K) or (N, M, K).
    Differentiable in the model's parameters; never mutates its arguments.
    """
    if spec is None:
        with torch.no_grad():
            k = model(x[:1]).shape[1]
        spec = torch.eye(k, device=x.device, dtype=x.dtype)
    if spec.dim() == 2:
        spec = spec.expand(x.shape[0], *spec.shape)
    both = torch.cat([spec, -spec], 1)
    bound = _spec_lower_bounds(
        model, x, eps, both, norm=norm, lower=lower, upper=upper,
        intermediate=intermediate, intersect_ibp=intersect_ibp,
    )
    m = spec.shape[1]
    return bound[:, :m], -bound[:, m:]


def margin_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    norm: Norm = "linf",
    lower: float = 0.0,
    upper: float = 1.0,
    intermediate: Intermediate = "crown",
    intersect_ibp: bool = True,
) -> Tensor:
    """Lower bounds (N, K-1) of the margins ``z_y - z_j`` (``j != y``) over the ball."""
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    return _spec_lower_bounds(
        model, x, eps, margin_spec(y, k, x), norm=norm, lower=lower, upper=upper,
        intermediate=intermediate, intersect_ibp=intersect_ibp,
    )


@torch.no_grad()
def verified(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    norm: Norm = "linf",
    lower: float = 0.0,
    upper: float = 1.0,
    intermediate: Intermediate = "crown",
    intersect_ibp: bool = True,
) -> Tensor:
    """Boolean (N,): the bounds prove ``argmax model(x') == y`` for every ``x'`` in the ball."""
    margins = margin_bounds(
        model, x, y, eps, norm=norm, lower=lower, upper=upper,
        intermediate=intermediate, intersect_ibp=intersect_ibp,
    )
    return (margins > 0).all(1)


def crown_ibp_loss(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, beta: float, kappa: float,
    lower: float = 0.0, upper: float = 1.0,
) -> Tensor:
    """Zhang et al. 2020's training loss: ``kappa * CE(clean) + (1 - kappa) * CE(z_hat)``, where the
    worst-case logits come from ``beta * CROWN-IBP + (1 - beta) * IBP`` margin lower bounds (the paper
    ramps ``beta`` from 1 to 0 together with ``eps``). L-inf only; BatchNorm layers must be in eval mode."""
    clean = F.cross_entropy(model(x), y)
    if kappa >= 1.0:
        return clean
    layers = crown_layers(model)
    box = input_box(x, eps, lower, upper)
    ibp = layer_intervals(layers, *box)
    spec = margin_spec(y, ibp[-1][0].shape[1], x)
    margins = spec_lower_bounds(layers, ibp, spec)
    if beta > 0:
        crown_ibp = _spec_lower_bounds(
            model, x, eps, spec, norm="linf", lower=lower, upper=upper,
            intermediate="ibp", intersect_ibp=False,
        )
        margins = beta * crown_ibp + (1 - beta) * margins
    return kappa * clean + (1 - kappa) * F.cross_entropy(worst_case_logits(margins, y), y)
