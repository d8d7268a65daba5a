"""Auto-PGD (APGD): CE and DLR losses, untargeted (``apgd``) and targeted over the top-k classes (``apgd-t``).

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML (Algorithm 1). Step size starts at 2 * eps and is halved at the
checkpoints w_j = ceil(p_j * n_iter), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
when (1) the loss rose in fewer than rho = 0.75 of the steps since the last checkpoint, or (2) the
step was not reduced at the last checkpoint and the best loss has not improved since; the iterate
then restarts from the best point. Steps use momentum alpha = 0.75.

L1 follows Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers", ICML: a sparse step on the top-k coordinates of the gradient (k starts at 20 % of
the features), the exact projection onto the L1 ball intersected with the box, initial step eps,
and at each checkpoint the adaptive-sparsity rule: k becomes ||x_best - x||_0 / 1.5; the step size
is reset to eps where that sparsity shrank by more than 5 % and divided by 1.5 otherwise (never
below eps / 10).

Per-sample early stopping: a point leaves the working batch as soon as it is adversarial; restarts
and further target classes run only on points not yet broken; unbroken points get the iterate
with the highest loss (best-so-far). DLR needs at least 3 classes (4 for the targeted form); with
fewer the C&W margin is used instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from bastion.attacks.apgd_l1 import l1_step, project_l1_box
from bastion.attacks.base import register_attack
from bastion.attacks.losses import cross_entropy, dlr, is_adversarial, margin
from bastion.attacks.steps import l2_ascent
from bastion.oracle import attribute, attribution
from bastion.threat import LpThreat, per_sample

PAPER = (
    "Croce & Hein 2020, Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks"
)
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, labels, targets) -> per-sample loss


def checkpoints(n_iter: int) -> set[int]:
    """Iterations w_j = ceil(p_j * n_iter) (j >= 1) at which the step size may be halved."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(q * n_iter - 1e-9) for q in p[1:]}


# ----------------------------------------------------------------------------------------------- losses
def _make_loss(name: str, targeted: bool, top_k_targets: bool) -> LossFn:
    """The loss APGD ascends. ``top_k_targets``: ``labels`` are true labels, ``targets`` APGD-T's targets."""
    if name not in ("ce", "dlr"):
        raise ValueError(f"Unknown APGD loss {name!r}; use 'ce' or 'dlr'.")

    def loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
        classes = logits.shape[1]
        if top_k_targets:  # targeted DLR towards `targets`, success = leaving `labels`
            if classes < 4:
                return margin(logits, targets, True) - margin(logits, labels, True)
            return dlr(logits, labels, True, target_ranks=targets)
        if name == "ce":
            return cross_entropy(logits, labels, targeted)
        if not targeted:
            return dlr(logits, labels) if classes >= 3 else margin(logits, labels)
        if classes < 4:
            return margin(logits, labels, True)
        best_other = logits.detach().scatter(1, labels[:, None], float("-inf")).argmax(1)
        return dlr(logits, best_other, True, target_ranks=labels)

    return loss


# ------------------------------------------------------------------------------------------------ state
@dataclass
class _State:
    """Everything per point of the working batch; ``take`` keeps the rows still being attacked, ``advance`` records
    one iteration in place (once per iteration, so no new state object each time)."""

    pos: Tensor  # position in the run's batch
    rows: Tensor  # the caller's sample index of each row (for the pass counter), on the CPU
    x: Tensor
    y: Tensor
    targets: Tensor
    eps: Tensor
    x_cur: Tensor
    x_prev: Tensor
    grad: Tensor
    f_cur: Tensor
    x_best: Tensor
    g_best: Tensor
    f_best: Tensor
    step: Tensor
    rises: Tensor  # loss increases since the last checkpoint
    f_best_last: Tensor  # best loss at the last checkpoint
    reduced_last: Tensor  # was the step reduced at the last checkpoint
    topk: Tensor  # L1 only: fraction of coordinates moved
    sparsity_old: Tensor  # L1 only
    lo: Tensor | None = None  # L-inf only: the threat set's per-coordinate bounds (LpThreat.linf_bounds)
    hi: Tensor | None = None

    def take(self, keep: Tensor) -> _State:
        idx = keep.nonzero().squeeze(1)  # once, not once per field as boolean indexing would
        on_cpu = idx.cpu()  # for ``rows``, which stays on the CPU
        return replace(self, **{f.name: v.index_select(0, on_cpu if v.device.type == "cpu" else idx)
                                for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def advance(self, x_new: Tensor, values: Tensor, grad: Tensor) -> None:
        """The new iterate with its loss and gradient; counts a rise of the loss and keeps the best so far
        (in ``x_best`` and ``g_best``'s own memory: both are always buffers of their own, never an alias)."""
        better = values > self.f_best
        self.rises = self.rises + (values > self.f_cur)  # the bool adds as 0 / 1
        # steps.select_rows written into the buffers (on CPU that saves the cold write of a new one, about a
        # fifth of the select's time after a pass), with one 0/1 weight for both
        weight = per_sample(better.to(x_new.dtype), x_new)
        torch.lerp(self.x_best, x_new, weight, out=self.x_best)
        torch.lerp(self.g_best, grad, weight, out=self.g_best)
        self.f_best = torch.where(better, values, self.f_best)
        self.x_prev, self.x_cur, self.f_cur, self.grad = self.x_cur, x_new, values, grad


def _evaluate(model: nn.Module, x_adv: Tensor, s: _State, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: (loss, gradient, logits), model grads untouched. The caller has pointed
    the pass counter at ``s.rows`` (``attribution``)."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    values = loss_fn(logits, s.y, s.targets)
    (grad,) = torch.autograd.grad(values.sum(), x_adv)  # no history of its own: nothing to detach
    if not grad.is_contiguous():  # a buffer of its own, which the next move overwrites (autograd may broadcast)
        grad = grad.contiguous()
    return values.detach(), grad, logits.detach()


@dataclass(frozen=True)
class _Config:
    threat: LpThreat
    n_iter: int
    rho: float
    momentum: float
    step_factor: float
    targeted: bool


def _project(s: _State, point: Tensor, cfg: _Config, eps: Tensor) -> Tensor:
    """``point`` onto the threat set; ``point`` is always a fresh tensor here, so L-inf and L2 work in place.
    ``eps``: ``s.eps``, for L2 already shaped to broadcast (one view for the move's two projections)."""
    if s.lo is not None:
        return point.clamp_(s.lo, s.hi)  # L-inf: one clamp
    t = cfg.threat
    if t.norm != "l1":
        # Per-sample eps of the working rows (the threat's own eps may be longer than the working batch).
        return t.project_radius(point, s.x, eps, overwrite=True)
    frozen = None if t.mask is None else ~t.mask.to(device=s.x.device, dtype=torch.bool).expand_as(s.x)
    return s.x + project_l1_box(point - s.x, s.x, s.eps, *t.flat_bounds(s.x), frozen)


def _move(s: _State, cfg: _Config, first: bool) -> Tensor:
    """z = P(x + step * dir); x_new = P(x + a (z - x) + (1 - a)(x - x_prev)), a = 1 on the first step."""
    t = cfg.threat
    eps = per_sample(s.eps, s.x) if t.norm == "l2" else s.eps
    # L-inf and L2 write z over s.grad: it is the state's own buffer (never an alias of g_best) and is not read
    # again before the next gradient replaces it.
    if t.norm == "linf":
        z = _project(s, torch.addcmul(s.x_cur, s.grad.sign_(), per_sample(s.step, s.grad), out=s.grad), cfg, eps)
    elif t.norm == "l2":
        z = _project(s, l2_ascent(s.x_cur, s.grad, per_sample(s.step, s.grad), out=s.grad), cfg, eps)
    else:
        z = _project(s, s.x_cur + l1_step(s.grad, s.x_cur, s.step, s.topk, *t.flat_bounds(s.x)), cfg, eps)
    if first:  # a = 1: the point is z itself, already in the threat set
        return z
    # x + a (z - x) + (1 - a)(x - x_prev) = lerp(2 x - x_prev, z, a), and 2 x - x_prev = lerp(x_prev, x, 2)
    return _project(s, torch.lerp(s.x_prev, s.x_cur, 2.0).lerp_(z, cfg.momentum), cfg, eps)


def _checkpoint(s: _State, cfg: _Config, period: int) -> _State:
    """Conditions 1 and 2 of the paper; restart from the best point where either holds."""
    cond1 = s.rises < cfg.rho * period
    cond2 = ~s.reduced_last & (s.f_best <= s.f_best_last)
    restart = cond1 | cond2
    step, topk, sparsity = s.step.clone(), s.topk, s.sparsity_old
    if cfg.threat.norm == "l1":
        d = s.x[0].numel()
        sparsity = (s.x_best - s.x).flatten(1).ne(0).sum(1).to(s.step.dtype)
        shrank = sparsity / s.sparsity_old < 0.95
        topk = (sparsity / d / 1.5).clamp(min=1.0 / d, max=1.0)
        base = cfg.step_factor * s.eps
        step = torch.where(shrank, base, step / 1.5)
        step = torch.minimum(torch.maximum(step, base / 10), base)
    else:
        step = torch.where(restart, step / 2, step)
    r = per_sample(restart, s.x)
    return replace(
        s, step=step, topk=topk, sparsity_old=sparsity, rises=torch.zeros_like(s.rises),
        x_cur=torch.where(r, s.x_best, s.x_cur), grad=torch.where(r, s.g_best, s.grad),
        f_cur=torch.where(restart, s.f_best, s.f_cur), f_best_last=s.f_best.clone(), reduced_last=restart,
    )


def _run(model: nn.Module, x: Tensor, y: Tensor, targets: Tensor, threat: LpThreat, index: Tensor,
         loss_fn: LossFn, cfg: _Config, random_init: bool, topk_init: float,
         generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run from one start. Returns (best point, its loss, broken mask) per point."""
    n = x.shape[0]
    eps = threat.eps_for(x)
    # the reference code's starts: uniform in the L-inf cube, on the L2 sphere, uniform in the L1 ball
    start = threat.random_start(x, generator, radius="sphere" if threat.norm == "l2" else "volume") \
        if random_init else x.clone()
    ones = torch.ones(n, device=x.device, dtype=x.dtype)
    s = _State(
        pos=torch.arange(n, device=x.device), rows=index.detach().to("cpu", torch.long), x=x, y=y,
        targets=targets, eps=eps, x_cur=start, x_prev=start,
        grad=torch.zeros_like(x), f_cur=ones, x_best=start.clone(), g_best=torch.zeros_like(x), f_best=ones,
        step=cfg.step_factor * eps, rises=torch.zeros(n, device=x.device), f_best_last=ones,
        reduced_last=torch.zeros(n, dtype=torch.bool, device=x.device), topk=topk_init * ones,
        sparsity_old=x[0].numel() * ones,
    )
    if threat.norm == "linf":
        s = replace(s, **dict(zip(("lo", "hi"), threat.linf_bounds(x, eps), strict=True)))
    out, out_loss = start.clone(), torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    marks, last_mark = checkpoints(cfg.n_iter), 0
    with attribution(model) as point:
        point(s.rows)
        for k in range(cfg.n_iter + 1):
            x_cur = _move(s, cfg, first=(k == 1)) if k > 0 else s.x_cur
            values, grad, logits = _evaluate(model, x_cur, s, loss_fn)
            if k == 0:  # the start is the first best point
                s = replace(s, f_cur=values, grad=grad, g_best=grad.clone(), f_best=values,
                            f_best_last=values.clone())
            else:
                s.advance(x_cur, values, grad)
            hit = is_adversarial(logits, s.y, cfg.targeted)
            any_hit = bool(hit.any())
            if any_hit:  # broken points leave with the adversarial iterate
                gone = s.pos[hit]
                out[gone], out_loss[gone], broken[gone] = s.x_cur[hit], float("inf"), True
            if k == cfg.n_iter or (any_hit and bool(hit.all())):
                rest = ~hit  # the others leave with their best-loss point
                out[s.pos[rest]], out_loss[s.pos[rest]] = s.x_best[rest], s.f_best[rest]
                break
            if any_hit:
                s = s.take(~hit)
                point(s.rows)
            if k in marks:
                s, last_mark = _checkpoint(s, cfg, k - last_mark), k
    return out, out_loss, broken


# ----------------------------------------------------------------------------------------------- driver
def _attack(model: nn.Module, inputs: Tensor, labels: Tensor, targets: Tensor, threat: LpThreat,
            remaining: Tensor, best: Tensor, best_loss: Tensor, *, loss_fn: LossFn, cfg: _Config,
            restarts: int, random_init: bool, topk_init: float,
            generator: torch.Generator | None) -> Tensor:
    """Restarts on the points in ``remaining``; updates ``best``/``best_loss``; returns those unbroken."""
    for _ in range(restarts):
        if remaining.numel() == 0:
            break
        sub = threat.select(remaining)
        adv, value, broken = _run(
            model, inputs[remaining], labels[remaining], targets[remaining], sub, remaining,
            loss_fn, replace(cfg, threat=sub), random_init, topk_init, generator,
        )
        better = value > best_loss[remaining]
        best[remaining[better]] = adv[better]
        best_loss[remaining[better]] = value[better]
        remaining = remaining[~broken]
    return remaining


def _check(n_iter: int, restarts: int) -> None:
    if n_iter < 1 or restarts < 1:
        raise ValueError("n_iter and restarts must be at least 1")


def _config(threat: LpThreat, n_iter: int, rho: float, momentum: float, initial_step: float | None,
            targeted: bool) -> _Config:
    factor = initial_step if initial_step is not None else (1.0 if threat.norm == "l1" else 2.0)
    return _Config(threat, n_iter, rho, momentum, factor, targeted)


@register_attack("apgd", norms=("linf", "l2", "l1"), goal="budget", paper=PAPER, randomized=True)
def apgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    loss: str = "ce",
    n_iter: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    initial_step: float | None = None,
    l1_topk: float = 0.2,
    random_init: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD-CE (``loss="ce"``) or APGD-DLR (``loss="dlr"``).

    ``initial_step`` is a multiple of eps (2 for L-inf/L2, 1 for L1 by default). With ``targeted=True``
    ``labels`` are the targets; the targeted DLR then compares the target with the best other class.
    Costs at most ``restarts * (n_iter + 1)`` forward and backward passes per point.
    """
    _check(n_iter, restarts)
    cfg = _config(threat, n_iter, rho, momentum, initial_step, targeted)
    best = inputs.detach().clone()
    best_loss = torch.full((inputs.shape[0],), float("-inf"), device=inputs.device, dtype=inputs.dtype)
    remaining = torch.arange(inputs.shape[0], device=inputs.device)
    _attack(model, inputs.detach(), labels, labels, threat, remaining, best, best_loss,
            loss_fn=_make_loss(loss, targeted, False), cfg=cfg, restarts=restarts,
            random_init=random_init, topk_init=l1_topk, generator=generator)
    return best.detach()


@register_attack(
    "apgd-t", norms=("linf", "l2", "l1"), goal="budget", paper=PAPER + " (APGD-T)", randomized=True,
)
def apgd_targeted(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    n_target_classes: int = 9,
    n_iter: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    initial_step: float | None = None,
    l1_topk: float = 0.2,
    random_init: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD-T: targeted DLR towards each of the ``n_target_classes`` most likely wrong classes in turn.

    ``labels`` are the TRUE labels (as in AutoAttack): success means leaving the true class, and the
    targets are the classes ranked 2nd, 3rd, ... by the clean logits; each target runs only on the
    points no earlier target broke. With ``targeted=True`` ``labels`` are instead the targets, and one
    targeted-DLR run towards them is made (the best other class stands in for the true one).
    """
    _check(n_iter, restarts)
    cfg = _config(threat, n_iter, rho, momentum, initial_step, targeted)
    x = inputs.detach()
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    remaining = torch.arange(x.shape[0], device=x.device)
    common = {"cfg": cfg, "restarts": restarts, "random_init": random_init, "topk_init": l1_topk,
              "generator": generator}
    if targeted:
        _attack(model, x, labels, labels, threat, remaining, best, best_loss,
                loss_fn=_make_loss("dlr", True, False), **common)
        return best.detach()
    with torch.no_grad(), attribute(model, remaining):
        ranking = model(x).argsort(1, descending=True)
    loss_fn = _make_loss("dlr", False, True)
    for rank in range(1, min(n_target_classes, ranking.shape[1] - 1) + 1):
        targets = ranking[:, rank]
        # Where the clean prediction is already wrong, rank 0 is a wrong class too; keep the true label out.
        targets = torch.where(targets == labels, ranking[:, 0], targets)
        remaining = _attack(model, x, labels, targets, threat, remaining, best, best_loss,
                            loss_fn=loss_fn, **common)
        best_loss[remaining] = float("-inf")  # losses of different targets are not comparable
    return best.detach()
