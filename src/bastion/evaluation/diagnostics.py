"""Gradient-masking diagnostics: checks that keep masked gradients and randomness from passing for robustness.

Athalye, Carlini & Wagner 2018 ("Obfuscated gradients give a false sense of security") and Carlini et al.
2019 ("On evaluating adversarial robustness", section 5) list the warning signs checked here. Each check
returns a ``Flag`` with the evidence (the numbers it saw). The probe checks run before the attacks (and
decide the adaptive switches: EOT for randomness, BPDA for non-differentiable modules, log-probabilities
for a model that outputs probabilities); the outcome checks read the attacks' results.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.adaptive import bpda


@dataclass(frozen=True)
class Flag:
    name: str
    fired: bool
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_randomness(model: nn.Module, x: Tensor) -> Flag:
    """Outputs that change between two identical calls (a randomized model or defense)."""
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    changed = float((a.argmax(1) != b.argmax(1)).float().mean())
    return Flag("randomness", diff > 1e-6,
                f"two identical calls differ by up to {diff:.3g} in the outputs; {100 * changed:.1f}% of predictions "
                "changed" if diff > 1e-6 else "identical calls give identical outputs",
                {"max_output_difference": diff, "prediction_change_rate": changed})


def check_probabilities(model: nn.Module, x: Tensor) -> Flag:
    """Outputs that are probabilities (rows in [0, 1] summing to 1) instead of logits."""
    with torch.no_grad():
        out = model(x)
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    sums = out.sum(1)
    fired = in_unit and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3))
    return Flag("probability_outputs", fired,
                "the model returns probabilities (rows in [0,1] summing to 1): cross-entropy on them is wrong and "
                "their gradients saturate; attacks use their logarithm instead" if fired else "outputs are logits",
                {"row_sum_mean": float(sums.mean()), "outputs_in_unit_interval": in_unit})


def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    if not out.requires_grad:
        return None
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), x, allow_unused=True)
    return grad


def check_gradients(model: nn.Module, x: Tensor, y: Tensor, eps_scale: float,
                    clip: Callable[[Tensor], Tensor] = lambda t: t.clamp(0, 1)) -> list[Flag]:
    """NaN gradients, vanishing gradients, and shattered gradients (zero gradient, yet the loss moves); ``clip``
    keeps the moved points in the input box (``LpThreat.clip``)."""
    grad = _input_grad(model, x, y)
    if grad is None:
        return [Flag("detached_gradients", True, "the model's output does not depend differentiably on its input "
                     "(a detach, no_grad or a numpy round trip in the forward pass)", {})]
    flat = grad.flatten(1)
    nan = float((~torch.isfinite(flat)).any(1).float().mean())
    zero = float((flat.abs().sum(1) == 0).float().mean())
    small = float((flat.norm(dim=1) < 1e-8).float().mean())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = F.cross_entropy(model(x), y, reduction="none")
        noise = torch.randn(x.shape, generator=g).to(x)  # drawn on the CPU: the same numbers on every device
        moved = F.cross_entropy(model(clip(x + eps_scale * noise)), y, reduction="none")
    loss_moves = (moved - base).abs() > 1e-4
    zero_rows = flat.abs().sum(1) == 0
    shattered = float((zero_rows & loss_moves).float().mean())
    return [
        Flag("nan_gradients", nan > 0, f"{100 * nan:.1f}% of points have NaN/inf input gradients", {"rate": nan}),
        Flag("vanishing_gradients", small > 0.5,
             f"{100 * small:.1f}% of points have an input-gradient norm below 1e-8 ({100 * zero:.1f}% exactly zero): "
             "saturated softmax (e.g. scaled logits) or masked gradients; margin/DLR losses are used as well",
             {"rate_below_1e-8": small, "rate_zero": zero}),
        Flag("shattered_gradients", shattered > 0.1,
             f"{100 * shattered:.1f}% of points have an exactly-zero gradient although random noise of scale "
             f"{eps_scale:g} changes their loss: a non-differentiable operation (quantization, rounding) "
             "is in the path",
             {"rate": shattered}),
    ]


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def hooks_supported(model: nn.Module) -> bool:
    """TorchScript modules take no forward hooks, so their layers cannot be probed one by one."""
    return not any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def find_nondifferentiable(model: nn.Module, x: Tensor, eps_scale: float) -> list[str]:
    """Names of leaf modules whose output moves with their input but passes back no gradient (none can be named in a
    TorchScript model: see ``hooks_supported``; the whole-model gradient checks still run on it)."""
    if not hooks_supported(model):
        return []
    inputs: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if args and isinstance(args[0], Tensor):
                inputs.setdefault(name, args[0].detach())

        return hook

    hooks = [m.register_forward_hook(keeper(n)) for n, m in _leaves(model) if not isinstance(m, nn.Identity)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    found = []
    g = torch.Generator().manual_seed(1)
    for name, module in _leaves(model):
        inp = inputs.get(name)
        if inp is None or not inp.is_floating_point():
            continue
        probe = inp.clone().requires_grad_(True)
        out = module(probe)
        if not isinstance(out, Tensor):
            continue
        grad = None
        if out.requires_grad:
            (grad,) = torch.autograd.grad(out.float().sum(), probe, allow_unused=True)
        no_grad = grad is None or bool((grad == 0).all())
        with torch.no_grad():
            noise = torch.randn(inp.shape, generator=g).to(inp)
            moves = not torch.allclose(module(inp + eps_scale * noise), out.detach())
        if no_grad and moves:
            found.append(name)
    return found


def with_bpda(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of ``model`` whose named leaf modules run forward as usual but back-propagate as the identity."""
    patched = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = patched.get_submodule(parent_name) if parent_name else patched
        setattr(parent, child, bpda(getattr(parent, child)))
    return patched


class LogOfProbabilities(nn.Module):
    """Turns a model that outputs probabilities into one that outputs log-probabilities (valid logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).clamp_min(1e-30).log()


# --- outcome checks ------------------------------------------------------------------------------------
def check_single_step(iterative_broken: Tensor, single_broken: Tensor) -> Flag:
    """FGSM breaking points the iterative attacks could not: the iterative attack is being misled."""
    extra = int((single_broken & ~iterative_broken).sum())
    return Flag("single_step_stronger", extra > 0,
                f"FGSM broke {extra} point(s) that the iterative attacks did not" if extra else
                "the iterative attacks broke every point FGSM broke", {"points": extra})


def check_black_box(black_box_only: int, attacked: int | None = None, candidates: int | None = None) -> Flag:
    """A gradient-free attack breaking points every white-box attack missed: gradients are masked.

    ``attacked`` of ``candidates``: the points the score-based stage ran on, of those still robust before it (a
    canary runs on a sample only, so its silence covers only that sample)."""
    numbers: dict[str, int] = {"points": black_box_only}
    if black_box_only:
        evidence = f"the score-based attack broke {black_box_only} point(s) that every white-box attack missed"
    else:
        evidence = "the score-based attack found nothing the white-box attacks missed"
        if attacked is not None and candidates is not None and attacked < candidates:
            evidence += (f", on the {attacked} of {candidates} still-robust points it ran on (a canary sample; "
                         "a full black-box run, as in the thorough suite, can find more)")
    if attacked is not None and candidates is not None:
        numbers |= {"attacked": attacked, "candidates": candidates}
    return Flag("black_box_stronger", black_box_only > 0, evidence, numbers)


def check_unbounded(accuracy: float, eps: float, chance: float) -> Flag:
    """Accuracy must fall to ~0 when eps covers the whole input box; otherwise gradients are masked."""
    fired = accuracy > max(2 * chance, 0.05)
    return Flag("unbounded_eps_not_zero", fired,
                f"at eps={eps:g} (the whole input box) robust accuracy is still {100 * accuracy:.1f}%" if fired else
                f"at eps={eps:g} robust accuracy falls to {100 * accuracy:.1f}%", {"accuracy": accuracy, "eps": eps})


def check_monotone(eps: list[float], accuracy: list[float], n: int) -> Flag:
    """Robust accuracy must not increase with eps (beyond one point of noise)."""
    tol = 1.0 / max(n, 1) + 1e-9
    rises = [(eps[i], eps[i + 1]) for i in range(len(eps) - 1) if accuracy[i + 1] > accuracy[i] + tol]
    return Flag("accuracy_not_decreasing", bool(rises),
                f"robust accuracy rises between eps {rises}" if rises else "robust accuracy decreases with eps",
                {"eps": eps, "accuracy": accuracy})


def box_covering_eps(norm: str, shape: tuple[int, ...], lower: float | Tensor, upper: float | Tensor) -> float:
    """The smallest eps whose ball around any point covers the whole box (per-feature bounds: the Lp norm of the
    vector of side lengths)."""
    if isinstance(lower, Tensor) or isinstance(upper, Tensor):
        sides = torch.as_tensor(upper, dtype=torch.float64) - torch.as_tensor(lower, dtype=torch.float64)
        order = {"linf": math.inf, "l2": 2.0, "l1": 1.0}[norm]
        return float(torch.linalg.vector_norm(sides.expand(1, *shape).flatten(), order))
    d, width = math.prod(shape), upper - lower
    return {"linf": width, "l2": width * math.sqrt(d), "l1": width * d}[norm]
