"""Standard (non-adversarial) training with seeds, validation and early stopping."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.zoo.architectures import build_model
from bastion.zoo.checkpoint import CheckpointMeta, read_meta, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    """Adam with the usual defaults; early stopping on validation accuracy (patience in epochs)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    seed: int = 0


@dataclass(frozen=True)
class TrainEvent:
    epoch: int
    batch: int
    batches: int
    loss: float


@dataclass
class TrainHistory:
    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` that ``model`` classifies correctly (model in eval mode)."""
    if len(split) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        correct += int((model(split.x[i:i + batch_size]).argmax(1) == split.y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / len(split)


def init_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with parameters drawn from ``seed`` without changing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_classifier(
    model: nn.Module,
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    on_batch: Callable[[TrainEvent], None] | None = None,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; keep the weights of the best validation epoch.

    Stops early when validation accuracy has not improved for ``config.patience`` epochs.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = TrainHistory()
    best_state, best_acc, start = copy.deepcopy(model.state_dict()), -1.0, time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        batches = _batches(len(train), config.batch_size, generator)
        total = 0.0
        for b, idx in enumerate(batches):
            loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            history.forward_passes += len(idx)
            history.backward_passes += len(idx)
            if on_batch is not None:
                on_batch(TrainEvent(epoch, b, len(batches), loss.item()))
        acc = accuracy(model, val)
        history.val_accuracy.append(acc)
        history.train_loss.append(total / max(len(batches), 1))
        if acc > best_acc:
            best_acc, history.best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history


def train_and_save(
    arch: str,
    dataset: str,
    out: str | Path,
    config: TrainConfig,
    *,
    arch_kwargs: dict | None = None,
    on_batch: Callable[[TrainEvent], None] | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """Train ``arch`` on ``dataset`` (its seeded train/val split), test it, and save a checkpoint at ``out``."""
    data = load_dataset(dataset, seed=config.seed)
    kwargs = dict(arch_kwargs or {})
    model = init_model(lambda: build_model(arch, data.spec.shape, data.spec.num_classes, **kwargs), config.seed)
    history = train_classifier(model, data.train, data.val, config, on_batch=on_batch)
    model.eval()
    meta = CheckpointMeta(
        arch=arch, input_shape=data.spec.shape, num_classes=data.spec.num_classes, dataset=dataset,
        arch_kwargs=kwargs, seed=config.seed,
        recipe={"method": "standard", "optimizer": "adam", **asdict(config)},
        metrics={
            "test_accuracy": accuracy(model, data.test), "val_accuracy": history.val_accuracy,
            "train_loss": history.train_loss, "best_epoch": history.best_epoch,
            "train_seconds": round(history.seconds, 2), "forward_passes": history.forward_passes,
            "backward_passes": history.backward_passes,
        },
    )
    save_checkpoint(model, out, meta)
    return model, read_meta(out)
