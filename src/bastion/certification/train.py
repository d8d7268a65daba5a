"""Training certifiably robust models: Gaussian noise (for randomized smoothing), IBP, CROWN-IBP and
1-Lipschitz margin training, with one seeded loop and a checkpoint at the end.

Methods (``CertTrainConfig.method``):

* ``"gaussian"``: cross-entropy on ``x + N(0, sigma^2 I)`` (Cohen et al. 2019 train with the sigma they certify).
* ``"ibp"``: Gowal et al. 2018: ``kappa * CE(clean) + (1 - kappa) * CE(IBP worst case)``; eps 0 with kappa 1
  for the warm-up epochs, then eps ramps linearly to ``eps`` while kappa goes 1 -> ``kappa_end`` (0.5).
* ``"crown-ibp"``: Zhang et al. 2020: the same with worst-case logits from ``beta * CROWN-IBP + (1 - beta) *
  IBP`` bounds, ``beta`` ramping from 1 to 0 with eps and ``kappa_end`` 0 by default (the paper's MNIST setup).
* ``"lipschitz"``: a 1-Lipschitz model trained with the margin cross-entropy of Tsuzuku et al. 2018:
  ``CE(scale * (z - sqrt(2) * eps * onehot(y)), y)``, which asks for an L2 margin certificate of ``eps``.

Schedules are in epochs (converted to optimizer steps); the paper's MNIST runs last 100 epochs or more on a
GPU; the defaults here are small so that a 2-core CPU trains a usable model in minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import bastion.zoo.certifiable  # noqa: F401  (registers crown-cnn and lipschitz-mlp)
from bastion.certification.crown import crown_ibp_loss
from bastion.certification.ibp import IBPSchedule, ibp_loss
from bastion.data import load_dataset
from bastion.errors import InvalidInputError
from bastion.zoo.architectures import build_model
from bastion.zoo.checkpoint import CheckpointMeta, read_meta, save_checkpoint
from bastion.zoo.train import TrainEvent, accuracy, init_model

Method = Literal["gaussian", "ibp", "crown-ibp", "lipschitz"]
METHODS: tuple[str, ...] = ("gaussian", "ibp", "crown-ibp", "lipschitz")
DEFAULT_ARCH = {"gaussian": "crown-cnn", "ibp": "crown-cnn", "crown-ibp": "crown-cnn", "lipschitz": "lipschitz-mlp"}


@dataclass(frozen=True)
class CertTrainConfig:
    """One certified-training recipe. ``eps`` is the training radius (L-inf for ibp/crown-ibp, L2 for
    lipschitz); ``sigma`` the noise level for gaussian. ``train_size`` keeps only the first points of the
    (seeded, shuffled) training split when set."""

    method: str = "ibp"
    epochs: int = 8
    warmup_epochs: float = 1.0
    ramp_epochs: float = 4.0
    batch_size: int = 128
    lr: float = 1e-3
    eps: float = 0.4
    sigma: float = 0.25
    kappa_end: float | None = None  # default: 0.5 (ibp), 0.0 (crown-ibp)
    margin_scale: float = 16.0
    train_size: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"Unknown training method {self.method!r}; use one of {', '.join(METHODS)}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidInputError("epochs and batch_size must be at least 1.")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise InvalidInputError(f"eps must be finite and non-negative; got {self.eps}.")
        if self.method == "gaussian" and not self.sigma > 0:
            raise InvalidInputError(f"sigma must be positive for gaussian training; got {self.sigma}.")
        if self.warmup_epochs < 0 or self.ramp_epochs < 0:
            raise InvalidInputError("warmup_epochs and ramp_epochs must be non-negative.")

    def schedule(self, steps_per_epoch: int) -> IBPSchedule:
        kappa_end = self.kappa_end if self.kappa_end is not None else (0.0 if self.method == "crown-ibp" else 0.5)
        return IBPSchedule(eps=self.eps, warmup_steps=round(self.warmup_epochs * steps_per_epoch),
                           ramp_steps=round(self.ramp_epochs * steps_per_epoch), kappa_end=kappa_end)


def make_loss(config: CertTrainConfig, schedule: IBPSchedule,
              generator: torch.Generator) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """The training loss of ``config.method`` at optimizer step ``step``."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        if config.method == "gaussian":
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            return F.cross_entropy(model(x + config.sigma * noise), y)
        if config.method == "lipschitz":
            z = model(x)
            offset = math.sqrt(2) * config.eps * F.one_hot(y, z.shape[1]).to(z)
            return F.cross_entropy(config.margin_scale * (z - offset), y)
        eps, kappa = schedule.eps_at(step), schedule.kappa_at(step)
        if config.method == "ibp":
            return ibp_loss(model, x, y, eps=eps, kappa=kappa)[0]
        beta = 1.0 - schedule.progress(step)
        return crown_ibp_loss(model, x, y, eps=eps, beta=beta, kappa=kappa)

    return loss


@dataclass
class CertTrainResult:
    model: nn.Module
    meta: CheckpointMeta
    seconds: float
    steps: int


def train_certified(
    config: CertTrainConfig,
    *,
    dataset: str = "mnist",
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    on_batch: Callable[[TrainEvent], None] | None = None,
) -> CertTrainResult:
    """Train ``arch`` (default: ``crown-cnn``, or ``lipschitz-mlp`` for lipschitz) on ``dataset`` with
    ``config``; keeps the last weights (the schedules end at the target eps), saves a checkpoint at ``out``."""
    config.check()
    arch = arch or DEFAULT_ARCH[config.method]
    data = load_dataset(dataset, seed=config.seed)
    kwargs = dict(arch_kwargs or {})
    model = init_model(lambda: build_model(arch, data.spec.shape, data.spec.num_classes, **kwargs), config.seed)
    train = data.train.take(config.train_size)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    schedule = config.schedule(steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = make_loss(config, schedule, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start, step = time.perf_counter(), 0
    for epoch in range(config.epochs):
        model.train()
        for b, idx in enumerate(torch.randperm(len(train), generator=generator).split(config.batch_size)):
            loss = loss_fn(model, train.x[idx], train.y[idx], step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if on_batch is not None:
                on_batch(TrainEvent(epoch, b, steps_per_epoch, float(loss.detach())))
    seconds = time.perf_counter() - start
    model.eval()
    meta = CheckpointMeta(
        arch=arch, input_shape=data.spec.shape, num_classes=data.spec.num_classes, dataset=dataset,
        arch_kwargs=kwargs, seed=config.seed,
        recipe={"method": config.method, "optimizer": "adam", **asdict(config),
                "kappa_end_used": schedule.kappa_end, "steps": step},
        metrics={"test_accuracy": accuracy(model, data.test), "val_accuracy": accuracy(model, data.val),
                 "train_seconds": round(seconds, 2), "threads": torch.get_num_threads()},
    )
    if out is not None:
        save_checkpoint(model, out, meta)
        meta = read_meta(out)
    return CertTrainResult(model, meta, seconds, step)
