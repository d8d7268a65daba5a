"""Gradient-descent evasion with a density term, inside a tabular threat with feature constraints.

Biggio, Corona, Maiorca, Nelson, Srndic, Laskov, Giacinto & Roli 2013, "Evasion Attacks against Machine Learning
at Test Time", ECML PKDD (section 3, eq. 2): minimise

    F(x) = g(x) - lambda * p_hat(x),    p_hat(x) = (1/n) sum_i exp(-||x - x_i||^2 / h)

inside the attacker's budget, where g is the detector's discriminant (here its logit margin: the true class's logit
minus the best other one, so g < 0 means evaded; targeted: the best other logit minus the target's) and p_hat a
Gaussian kernel density estimate over benign rows x_i the attacker knows (the paper's "mimicry" term, which pulls
the point into regions where benign data lives instead of regions the detector has never seen). Gradient descent
with a fixed number of steps; the paper runs it until F stops decreasing.

Carried into the constrained space: distances for the kernel are over every column of the completed row in the
threat's scaled space (``(x - lower) / scale``); steps are steepest-descent steps of the threat's norm in that
space on the free features (``constrained.ascent`` on ``-grad F``), the iterate stays real-valued
(``constrained.relax``: ball, box, immutables; derived features recomputed, so the gradient flows through them),
and every iterate's repair ``threat.project`` is checked and offered to the tracker of the best valid candidate
(adversarial first, then the lowest F).

The benign rows (``reference``) are the attacker's knowledge and must come from the caller (the IDS evaluation
passes benign training rows). Without them the attack falls back to the batch itself: for each point, the clean
inputs that the model already assigns to where the point should go (its target class, or any class but its
label), a weaker stand-in documented as such; a point with no such row gets no density term.

Chosen values (the paper tunes lambda and h per data set and gives no value that carries over to scaled flow
features): lambda = 10 (p_hat is in [0, 1] and g in logits, so the term weighs like a few logits), h = the median
squared distance between the inputs and the reference rows (the median heuristic; pass ``bandwidth`` to fix it),
50 steps of 0.1 * eps (scaled units). Costs ``2 * steps + 1`` forward and ``steps`` backward passes per point
(plus one forward for the fallback reference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, ascent, check_count, check_threat, relax, scale_of
from bastion.attacks.losses import margin
from bastion.errors import InvalidInputError

PAPER = "Biggio et al. 2013, Evasion Attacks against Machine Learning at Test Time (ECML PKDD)"


@register_attack("kde-evasion", norms=("linf", "l2"), goal="budget", paper=PAPER, threats=("tabular",))
def kde_evasion(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    lam: float = 10.0,
    bandwidth: float | None = None,
    steps: int = 50,
    step_factor: float = 0.1,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Minimise ``g - lam * p_hat`` for ``steps`` steps of ``step_factor * eps``. ``reference``: benign rows
    (M, D) in raw units, the attacker's knowledge (module docstring for the fallback). ``generator`` is unused."""
    check_threat(threat, inputs, "kde-evasion")
    check_count("kde-evasion", steps=steps)
    ref, weight = _reference(model, inputs, labels, threat, reference, targeted)
    h = float(bandwidth) if bandwidth is not None else median_bandwidth(inputs, ref, threat)
    if h <= 0:
        raise InvalidInputError(f"kde-evasion: bandwidth must be positive; got {h}.")
    step = step_factor * threat.eps_for(inputs).to(inputs.dtype)
    best = Best(inputs, labels, targeted)
    x = inputs.clone()
    for t in range(steps + 1):
        cand = threat.project(x, inputs)
        with torch.no_grad():
            logits = model(cand)
            f = -margin(logits, labels, targeted) - lam * density(cand, ref, threat, h, weight)
        best.update(cand, logits, -f, threat.contains(cand, inputs))
        if t == steps:
            break
        x = relax(threat, ascent(x, -_gradient(model, x, labels, threat, ref, weight, lam, h, targeted), step,
                                 threat), inputs).detach()
    return best.result(threat.project(inputs.clone(), inputs))


def _gradient(model: nn.Module, x: Tensor, labels: Tensor, threat: Threat, ref: Tensor, weight: Tensor | None,
              lam: float, h: float, targeted: bool) -> Tensor:
    """d F / d x (raw units) through ``threat.complete``; one forward and one backward pass."""
    x = x.detach().requires_grad_(True)
    completed = threat.complete(x)
    f = -margin(model(completed), labels, targeted)
    if lam:
        f = f - lam * density(completed, ref, threat, h, weight)
    (grad,) = torch.autograd.grad(f.sum(), x)
    return grad.detach()


def density(x: Tensor, reference: Tensor, threat: Threat, bandwidth: float, weight: Tensor | None = None) -> Tensor:
    """The Gaussian KDE ``(1/n) sum_i exp(-||u - u_i||^2 / h)`` per row of ``x`` (N,), distances over every column
    in the threat's scaled space; ``weight`` (N, M) restricts each row's sum to some reference rows (0/1)."""
    if reference.shape[0] == 0:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    lower, scale = threat.lower.to(x.device, x.dtype), scale_of(threat, x)
    d2 = torch.cdist((x - lower) / scale, (reference - lower) / scale).square()
    k = torch.exp(-d2 / bandwidth)
    if weight is None:
        return k.mean(1)
    return (k * weight).sum(1) / weight.sum(1).clamp_min(1)


def median_bandwidth(inputs: Tensor, reference: Tensor, threat: Threat) -> float:
    """The median squared scaled distance between the inputs and the reference rows (1 without reference rows)."""
    if reference.shape[0] == 0:
        return 1.0
    scale, lower = scale_of(threat, inputs), threat.lower.to(inputs.device, inputs.dtype)
    d2 = torch.cdist((inputs - lower) / scale, (reference - lower) / scale).square()
    return max(float(d2.median()), 1e-6)


def _reference(model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, reference: Tensor | None,
               targeted: bool) -> tuple[Tensor, Tensor | None]:
    """The benign rows and, for the fallback, which of them count for which point (module docstring)."""
    if reference is not None:
        ref = torch.as_tensor(reference).to(device=inputs.device, dtype=inputs.dtype)
        if ref.dim() != 2 or ref.shape[1] != inputs.shape[1]:
            raise InvalidInputError(f"kde-evasion: reference must be benign rows (M, {inputs.shape[1]}); got shape "
                                    f"{tuple(ref.shape)}.")
        return ref, None
    with torch.no_grad():
        pred = model(inputs).argmax(1)
    weight = pred[None, :] == labels[:, None] if targeted else pred[None, :] != labels[:, None]
    return inputs, weight.to(inputs.dtype)
