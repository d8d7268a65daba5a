"""Projected Gradient Descent with random start and restarts, for L-inf, L2 and L1.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR. The L1 version uses the sparse steepest-ascent step of Tramer & Boneh 2019.

Per-sample early stopping: a point leaves the batch as soon as it is adversarial, and restarts are
spent only on points no earlier restart broke. For points never broken the iterate with the highest
loss is returned (best-so-far).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import LOSSES, input_gradient, is_adversarial
from bastion.attacks.steps import l2_ascent, lp_step, select_rows
from bastion.oracle import attribution
from bastion.threat import LpThreat, per_sample

STEP_FACTOR = 2.5  # Madry et al.: step size 2.5 * eps / steps


@register_attack(
    "pgd",
    norms=("linf", "l2", "l1"),
    goal="budget",
    paper="Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks",
    randomized=True,
)
def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = True,
    loss: str = "ce",
    l1_sparsity: float = 0.99,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD. ``step_size`` defaults to 2.5 * eps / steps (per sample when eps is per sample).

    Costs at most ``restarts * (steps + 1)`` forward and ``restarts * steps`` backward passes per point.
    """
    if steps < 1 or restarts < 1:
        raise ValueError("steps and restarts must be at least 1")
    eps = threat.eps_for(inputs)
    step = torch.full_like(eps, step_size) if step_size is not None else STEP_FACTOR * eps / steps
    best = inputs.clone()
    remaining = torch.arange(inputs.shape[0], device=inputs.device)
    for restart in range(restarts):
        if remaining.numel() == 0:
            break
        adv, broken = _run(
            model, inputs[remaining], labels[remaining], threat.select(remaining), remaining, step[remaining],
            steps=steps, random_init=random_init, loss=loss, targeted=targeted,
            l1_sparsity=l1_sparsity, generator=generator,
        )
        # Unbroken points keep the first restart's best iterate unless broken later.
        best[remaining[broken]] = adv[broken]
        if restart == 0:
            best[remaining[~broken]] = adv[~broken]
        remaining = remaining[~broken]
    return best.detach()


def _run(
    model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, index: Tensor, step: Tensor, *,
    steps: int, random_init: bool, loss: str, targeted: bool, l1_sparsity: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One PGD run from one start. Returns (best iterate per point, broken mask).

    The working tensors hold only the points still attacked (a broken point leaves them at once), so
    each iteration costs what its shrinking batch costs and no more.
    """
    loss_fn = LOSSES[loss]
    start = threat.random_start(x, generator) if random_init else x.clone()
    out = start.clone()
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    pos = torch.arange(x.shape[0], device=x.device)  # rows of this run's batch still attacked
    xa, xc, ya, sa, ea = start, x, y, step, threat.eps_for(x)
    # L-inf: the threat set is a box per coordinate, so each step is one fused add and one clamp.
    lo, hi = threat.linf_bounds(x, ea) if threat.norm == "linf" else (None, None)
    lower, upper = threat.flat_bounds(x)
    best_x, best_loss = start, torch.full((x.shape[0],), float("-inf"), device=x.device)
    rows = index[pos].cpu()  # each working row's sample, for the pass counter (changes only on a shrink)
    with attribution(model) as point:
        point(rows)
        for t in range(steps + 1):
            if t < steps:
                logits, grad, values = input_gradient(model, xa, ya, loss_fn, targeted)
            else:
                with torch.no_grad():
                    logits = model(xa)
                values = loss_fn(logits, ya, targeted)
            hit = is_adversarial(logits, ya, targeted)
            better = (values > best_loss) | hit
            if bool(better.all()):  # no copy at all; 29-100% of the iterations on the bench models
                best_x, best_loss = xa, values
            else:
                best_x, best_loss = select_rows(better, xa, best_x), torch.where(better, values, best_loss)
            if t == steps or bool(hit.all()):
                out[pos], broken[pos] = best_x, hit
                break
            if bool(hit.any()):
                out[pos[hit]], broken[pos[hit]] = xa[hit], True
                keep = ~hit
                pos, xa, xc, ya, sa, ea = pos[keep], xa[keep], xc[keep], ya[keep], sa[keep], ea[keep]
                rows = rows[keep.cpu()]
                point(rows)
                best_x, best_loss, grad = best_x[keep], best_loss[keep], grad[keep]
                if lo is not None:
                    lo, hi = lo[keep], hi[keep]
            # L-inf and L2 write the step over grad, which is this run's own and not read again.
            if not grad.is_contiguous():  # a buffer of its own (autograd may give a broadcast)
                grad = grad.contiguous()
            if lo is not None:
                xa = torch.addcmul(xa, grad.sign_(), per_sample(sa, x), out=grad).clamp_(lo, hi)
                continue
            if threat.norm == "l2":
                moved = l2_ascent(xa, grad, sa, out=grad)
            else:
                moved = xa + lp_step(grad, sa, threat.norm, x=xa, lower=lower, upper=upper,
                                     l1_sparsity=l1_sparsity)
            xa = threat.project_radius(moved, xc, ea, overwrite=True)
    return out, broken
