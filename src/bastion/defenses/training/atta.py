"""ATTA: adversarial perturbations carried over and accumulated across epochs.

Zheng, Zhang, Gu, Lee & Prakash 2020, "Efficient Adversarial Training with Transferable Adversarial
Examples", CVPR. Adversarial examples of one epoch's model stay adversarial for the next epoch's, so each
training point keeps its perturbation from the last time it was drawn and takes one more attack step from
there instead of from a fresh random start: over the epochs the examples accumulate the strength of a
multi-step attack at the cost of one step per visit. The authors' MNIST setting is eps 0.3, one step of
0.01 per visit, 60 epochs, never reset (github.com/haizhongzheng/ATTA, ``mnist-atta-1-mat.json``).

``PerturbationMemory`` holds the perturbations, one row per training point, in float16 (each entry rounds by
at most 2^-11 of its magnitude, under 1.5e-4 at eps 0.3: far below any training step). The training loop owns it, saves
it with the resumable state and passes it to the step in ``StepContext.memory``; data-parallel ranks write
their rows of every global batch and share them with one all-reduce, so all replicas keep the same memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bastion.defenses.training.base import StepContext, all_reduce_, random_start
from bastion.threat import LpThreat


class PerturbationMemory:
    """Per-training-point perturbations kept across epochs; allocated on the first write."""

    def __init__(self, size: int, dtype: torch.dtype = torch.float16) -> None:
        self.size, self.dtype = size, dtype
        self.delta: Tensor | None = None
        self.seen: Tensor | None = None

    def read(self, ctx: StepContext, like: Tensor) -> tuple[Tensor, Tensor]:
        """(the stored perturbations of this rank's rows, which of them were written before)."""
        rows = _local_rows(ctx, like.shape[0])
        if self.delta is None or self.seen is None:
            return torch.zeros_like(like), torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)
        return self.delta[rows].to(like), self.seen[rows].to(like.device)

    def write(self, ctx: StepContext, delta: Tensor) -> None:
        """Store this rank's rows; under data parallelism every rank receives all rows of the global batch."""
        rows = _local_rows(ctx, delta.shape[0])
        if self.delta is None or self.seen is None:
            self.delta = torch.zeros((self.size, *delta.shape[1:]), dtype=self.dtype)
            self.seen = torch.zeros(self.size, dtype=torch.bool)
        values = delta.detach()
        if ctx.world > 1:
            values = delta.new_zeros((ctx.global_size(delta.shape[0]), *delta.shape[1:]))
            values[ctx.start:ctx.start + delta.shape[0]] = delta.detach()
            all_reduce_([values], ctx)
            rows = ctx.index.cpu()
        self.delta[rows] = values.to("cpu", self.dtype)
        self.seen[rows] = True

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "dtype": str(self.dtype).removeprefix("torch."), "delta": self.delta,
                "seen": self.seen}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PerturbationMemory:
        memory = cls(state["size"], getattr(torch, state["dtype"]))
        memory.delta, memory.seen = state["delta"], state["seen"]
        return memory


def _local_rows(ctx: StepContext, n: int) -> Tensor:
    """Data-set indices of this rank's ``n`` rows (``ctx.index`` holds the whole global batch's)."""
    if ctx.index is None:
        raise ValueError("PerturbationMemory needs the batch's data-set indices in StepContext.index; "
                         "train through bastion.defenses.training.train_epochs or adversarial_train.")
    rows = ctx.index[ctx.start:ctx.start + n]
    if rows.shape[0] != n:
        raise ValueError(f"StepContext.index has {rows.shape[0]} rows from {ctx.start} for a batch of {n}.")
    return rows.cpu()


def prior_start(threat: LpThreat, x: Tensor, ctx: StepContext) -> Tensor:
    """Where ATTA's step starts: ``x`` plus the point's stored perturbation, projected onto the current ball
    (the eps may have grown since it was stored); points not drawn before start uniformly in the ball."""
    if ctx.memory is None:
        raise ValueError("init='prior' needs the training loop's PerturbationMemory in StepContext.memory; "
                         "train through bastion.defenses.training.train_epochs or adversarial_train.")
    stored, seen = ctx.memory.read(ctx, x)
    if not bool(seen.any()):  # the first epoch: nothing stored yet
        return random_start(threat, x, ctx)
    carried = threat.project(x + stored, x)
    if bool(seen.all()):  # every later epoch: no fresh draw needed
        return carried
    return torch.where(seen.view(-1, *([1] * (x.dim() - 1))), carried, random_start(threat, x, ctx))
