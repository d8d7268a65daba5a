"""What every adversarial-training step shares: the step context, its randomness, gradient sync, costs.

A training method is one function ``step(model, optimizer, x, y, threat, ctx, **hyper) -> StepStats``
that takes one optimizer step on the batch ``(x, y)``. ``ctx`` says which rows of the *global* batch
this process holds, so the same step runs single-process or data-parallel: random starts are drawn for
the whole global batch from a per-batch seed and sliced (a rank sees exactly the noise that the
single-process run gives the same rows), losses are local sums divided by the global batch size, and
gradients are summed over ranks with ``all_reduce`` before the update. The result is the single-process
update up to floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bastion.attacks.steps import lp_step
from bastion.registry import Registry
from bastion.threat import LpThreat

if TYPE_CHECKING:
    from bastion.defenses.training.atta import PerturbationMemory


@dataclass(frozen=True)
class StepContext:
    """Where this batch sits in the global batch.

    Args:
        seed: per-batch seed for all random draws of the step (the loop draws it from its generator).
        start: index of this process's first row in the global batch.
        total: global batch size (0: the local batch is the whole batch).
        world: number of data-parallel processes (gradients are all-reduced when above 1).
        index: the data-set indices of the whole global batch (methods that keep per-point state need them).
        memory: per-point perturbations kept across epochs (ATTA, ``atta.py``), owned by the loop.
    """

    seed: int = 0
    start: int = 0
    total: int = 0
    world: int = 1
    index: Tensor | None = None
    memory: PerturbationMemory | None = None

    def global_size(self, local: int) -> int:
        return self.total or local


@dataclass(frozen=True)
class StepStats:
    """What one step did: its mean training loss and the passes it spent (per-sample counts summed)."""

    loss: float
    forward: int
    backward: int


@dataclass(frozen=True)
class MethodSpec:
    name: str
    step: Callable[..., StepStats]
    paper: str
    description: str


METHODS: Registry[MethodSpec] = Registry("training method", "bastion adv-train --help")


def register_method(name: str, *, paper: str, description: str) -> Callable[[Callable], Callable]:
    return METHODS.decorator(name, lambda fn: MethodSpec(name, fn, paper, description))


# randomness -------------------------------------------------------------------------------------
def _global_draw(ctx: StepContext, like: Tensor, salt: int, kind: str) -> Tensor:
    g = torch.Generator(device=like.device).manual_seed((ctx.seed * 1_000_003 + salt) % (2**63))
    shape = (ctx.global_size(like.shape[0]), *like.shape[1:])
    full = (torch.rand if kind == "uniform" else torch.randn)(shape, generator=g, device=like.device, dtype=like.dtype)
    return full[ctx.start:ctx.start + like.shape[0]]


def uniform_like(ctx: StepContext, like: Tensor, salt: int = 0) -> Tensor:
    """U[0, 1) noise of ``like``'s shape, the same for a row whichever rank holds it."""
    return _global_draw(ctx, like, salt, "uniform")


def normal_like(ctx: StepContext, like: Tensor, salt: int = 0) -> Tensor:
    """N(0, 1) noise of ``like``'s shape, the same for a row whichever rank holds it."""
    return _global_draw(ctx, like, salt, "normal")


def random_start(threat: LpThreat, x: Tensor, ctx: StepContext, salt: int = 0) -> Tensor:
    """Uniform start in the L-inf box (other norms: a Gaussian direction scaled into the ball), projected."""
    eps = threat.eps_for(x).view(-1, *([1] * (x.dim() - 1)))
    if threat.norm == "linf":
        delta = (2 * uniform_like(ctx, x, salt) - 1) * eps
    else:
        g = normal_like(ctx, x, salt)
        delta = g / g.flatten(1).norm(p=threat.order, dim=1).clamp_min(1e-12).view_as(eps) * eps
        delta = delta * uniform_like(ctx, x[:, :1].flatten(1)[:, :1], salt + 1).view_as(eps)
    return threat.project(x + delta, x)


# losses and gradients ---------------------------------------------------------------------------
def batch_mean(per_sample: Tensor, ctx: StepContext) -> Tensor:
    """Local sum over the global batch size: summed over ranks it is the global mean."""
    return per_sample.sum() / ctx.global_size(per_sample.shape[0])


def all_reduce_(tensors: list[Tensor], ctx: StepContext) -> None:
    """Sum ``tensors`` in place over all ranks, in one flat message (no-op single-process)."""
    if ctx.world <= 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def sync_gradients(params: list[nn.Parameter], ctx: StepContext) -> None:
    """Sum the ``.grad`` of ``params`` over all ranks (no-op single-process)."""
    all_reduce_([p.grad for p in params if p.grad is not None], ctx)


def update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor, ctx: StepContext) -> None:
    """Backward, all-reduce the gradients, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync_gradients([p for p in model.parameters() if p.requires_grad], ctx)
    optimizer.step()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Craft attacks with the model in eval mode (batch-norm statistics untouched), then restore."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: LpThreat,
    ctx: StepContext,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    steps: int,
    step_size: float | Tensor,
    start: Tensor | None = None,
    early_stop_tau: int | None = None,
) -> tuple[Tensor, int]:
    """Training-time PGD ascending the per-sample ``loss_fn(logits, y)`` for exactly ``steps`` steps.

    No best-so-far bookkeeping: training uses the last iterate (Madry et al. 2018). With
    ``early_stop_tau`` a point stops moving ``tau`` steps after it is first misclassified
    (Friendly AT, Zhang et al. 2020). Returns ``(x_adv, gradient steps computed)``; parameter grads are untouched.
    """
    x_adv = (random_start(threat, x, ctx) if start is None else start).detach()
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).expand(x.shape[0])
    budget = torch.full((x.shape[0],), steps, device=x.device)
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    iterations = 0
    lower, upper = threat.flat_bounds(x)
    with eval_mode(model):
        for t in range(steps):
            moving = taken == t if early_stop_tau is None else (taken == t) & (budget > t)
            if not moving.any():
                break
            iterations += 1
            xa = x_adv.requires_grad_(True)
            logits = model(xa)
            (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), xa)
            if early_stop_tau is not None:
                wrong = (logits.argmax(1) != y) & (budget == steps)
                budget = torch.where(wrong, torch.full_like(budget, t + early_stop_tau), budget)
                moving = moving & (budget > t)
            moved = x_adv.detach() + lp_step(grad, step, threat.norm, x=x_adv.detach(),
                                             lower=lower, upper=upper)
            x_adv = torch.where(moving.view(-1, *([1] * (x.dim() - 1))), threat.project(moved, x), x_adv.detach())
            taken = taken + moving.long()
    return x_adv.detach(), iterations
