"""The adversarial-training loop: schedules, robust validation, collapse guard, EMA or SWA, resumable state, DDP.

``adversarial_train(recipe, out)`` trains from a ``Recipe`` and writes a checkpoint (``out.safetensors`` +
``out.json``, the recipe, costs and validation curves in its metadata), a plot (``out.png``) and, after
every epoch, a training state (``out.state.pt``) from which a killed run resumes to the same result.
Data-parallel: run it under ``torchrun`` (see ``ddp.py``); every rank holds the full data set and trains on
its slice of each global batch; gradients are summed over ranks, so replicas stay identical.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.defenses.training.atta import PerturbationMemory
from bastion.defenses.training.averaging import ema_update, recompute_bn, swa_model, swa_update
from bastion.defenses.training.base import METHODS, StepContext
from bastion.defenses.training.curriculum import AutoSchedule
from bastion.defenses.training.guard import CollapseGuard, robust_accuracy
from bastion.defenses.training.recipe import Recipe
from bastion.errors import CheckpointError
from bastion.threat import LpThreat
from bastion.zoo.architectures import build_model
from bastion.zoo.checkpoint import CheckpointMeta, save_checkpoint
from bastion.zoo.train import accuracy, init_model


@dataclass(frozen=True)
class Event:
    """Progress report: ``kind`` is ``batch``, ``epoch`` or ``collapse``."""

    kind: str
    epoch: int
    batch: int
    batches: int
    loss: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    """Everything needed to continue a run exactly (saved each epoch)."""

    epoch: int = 0
    step: int = 0
    history: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "epoch", "train_loss", "val_clean", "val_robust", "eps", "seconds")})
    best_robust: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, Any] | None = None
    forward: int = 0
    backward: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stopped: str = ""
    schedule: AutoSchedule | None = None
    memory: PerturbationMemory | None = None


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_at(recipe: Recipe, progress: float, epoch: int = 0) -> float:
    """Cyclic: 0 -> lr at 2/5 of training -> 0 (Wong et al. 2020); piecewise: x0.1 at 1/2 and 3/4 (Madry, Rice);
    ``swa_lr`` from epoch ``swa_start`` on (Izmailov et al. 2018: a constant SWA learning rate)."""
    if recipe.swa_lr is not None and recipe.swa_start is not None and epoch >= recipe.swa_start:
        return recipe.swa_lr
    if recipe.lr_schedule == "cyclic":
        peak = 0.4
        return recipe.lr * (progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak)))
    if recipe.lr_schedule == "piecewise":
        return recipe.lr * (1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01)
    return recipe.lr


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                run: RunState, ema: nn.Module | None, swa: AveragedModel | None, guard: CollapseGuard) -> None:
    tmp = path.with_suffix(".tmp")
    saved_run = {f.name: getattr(run, f.name) for f in fields(run)} | {
        "schedule": None if run.schedule is None else asdict(run.schedule),
        "memory": None if run.memory is None else run.memory.state()}
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "run": saved_run, "ema": None if ema is None else ema.state_dict(),
                "swa": None if swa is None else swa.state_dict(), "guard": guard.state()}, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                ema: nn.Module | None, swa: AveragedModel | None) -> tuple[RunState, CollapseGuard]:
    try:  # plain tensors and numbers: nothing in the file can run code
        s = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        why = "it holds more than tensors and plain numbers; bastion never unpickles code"
        raise CheckpointError(f"{path} is not a training state bastion wrote ({why}): delete it, or start over "
                              "with --no-resume.") from None
    model.load_state_dict(s["model"])
    optimizer.load_state_dict(s["optimizer"])
    generator.set_state(s["generator"])
    if ema is not None and s["ema"] is not None:
        ema.load_state_dict(s["ema"])
    if swa is not None and s.get("swa") is not None:
        swa.load_state_dict(s["swa"])
    run = RunState(**{k: v for k, v in s["run"].items() if k not in ("schedule", "memory")})
    run.schedule = None if s["run"]["schedule"] is None else AutoSchedule(**s["run"]["schedule"])
    memory = s["run"].get("memory")
    run.memory = None if memory is None else PerturbationMemory.from_state(memory)
    return run, CollapseGuard.from_state(s["guard"])


def train_epochs(
    model: nn.Module,
    train: Split,
    val: Split,
    recipe: Recipe,
    *,
    step_fn: Callable[..., Any] | None = None,
    state_path: Path | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[nn.Module, RunState]:
    """Train ``model`` in place by ``recipe``; returns (the selected model, the run state).

    The selected model is the best epoch by robust validation accuracy (Rice et al. 2020) of the raw or,
    with ``ema_decay``, the averaged weights (with ``swa_start``: the raw weights before that epoch, the SWA
    average from it on). ``step_fn`` overrides the recipe's method (tests).
    """
    rank, world = rank_world()
    step_fn = step_fn or METHODS.get(recipe.defense).step
    optimizer = make_optimizer(recipe, model)
    generator = torch.Generator().manual_seed(recipe.seed)
    ema = copy.deepcopy(model) if recipe.ema_decay else None
    swa = swa_model(model) if recipe.swa_start is not None else None
    run, guard = RunState(), CollapseGuard(drop=recipe.collapse_drop)
    if recipe.schedule == "auto":
        run.schedule = AutoSchedule.begin(recipe.eps)
    run.memory = PerturbationMemory(len(train))  # stays empty unless the method stores perturbations (ATTA)
    if state_path is not None and state_path.exists():
        run, guard = _load_state(state_path, model, optimizer, generator, ema, swa)
    vx, vy = val.x[:recipe.val_size], val.y[:recipe.val_size]
    cx, cy = val.x[:recipe.check_size], val.y[:recipe.check_size]
    n, per_epoch = len(train), math.ceil(len(train) / recipe.batch_size)
    total_steps = recipe.epochs * per_epoch
    kwargs = dict(recipe.method)
    tau_param = "early_stop_tau" in inspect.signature(step_fn).parameters
    while run.epoch < recipe.epochs and not run.stopped:
        start, cpu, losses, eps = time.perf_counter(), time.process_time(), [], recipe.eps
        batches = torch.randperm(n, generator=generator).split(recipe.batch_size)
        for b, idx in enumerate(batches):
            progress = run.step / total_steps
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, progress, run.epoch)
            eps = _eps_at(recipe, run, progress, per_epoch)
            if run.schedule is not None and tau_param and "early_stop_tau" not in recipe.method:
                kwargs["early_stop_tau"] = run.schedule.tau_at(progress)
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            local = torch.tensor_split(idx, world)[rank]
            offset = sum(len(c) for c in torch.tensor_split(idx, world)[:rank])
            ctx = StepContext(seed=seed, start=offset, total=len(idx), world=world, index=idx, memory=run.memory)
            threat = LpThreat(recipe.norm, eps)
            stats = step_fn(model, optimizer, train.x[local], train.y[local], threat, ctx, **kwargs)
            run.forward, run.backward = run.forward + stats.forward, run.backward + stats.backward
            losses.append(stats.loss)
            run.step += 1
            if ema is not None:
                ema_update(ema, model, run.step, recipe.ema_decay)
            if on_event is not None:
                on_event(Event("batch", run.epoch, b, len(batches), stats.loss, {"eps": eps}))
            last = b == len(batches) - 1
            due = (recipe.check_every and (b + 1) % recipe.check_every == 0) or last
            if due and _check(model, guard, run, recipe, cx, cy, eps, progress, on_event, b, len(batches)):
                break
        run.seconds += time.perf_counter() - start
        run.cpu_seconds += time.process_time() - cpu
        _end_epoch(model, ema, swa, run, recipe, train, vx, vy, losses, eps, on_event)
        run.epoch += 1
        if recipe.patience and run.epoch - 1 - run.best_epoch >= recipe.patience:
            run.stopped = run.stopped or f"early stop: no robust validation gain for {recipe.patience} epochs"
        if state_path is not None and rank == 0:
            _save_state(state_path, model, optimizer, generator, run, ema, swa, guard)
        if world > 1:
            dist.barrier()
    selected = ema if ema is not None else swa.module if swa is not None and int(swa.n_averaged) else model
    if run.best_state is not None:
        selected.load_state_dict(run.best_state)
    return selected.eval(), run


def _eps_at(recipe: Recipe, run: RunState, progress: float, per_epoch: int) -> float:
    if run.schedule is not None:
        return run.schedule.eps_at(progress)
    if recipe.eps_warmup_epochs > 0:
        return recipe.eps * min(1.0, (run.step + 1) / (recipe.eps_warmup_epochs * per_epoch))
    return recipe.eps


def _check(model: nn.Module, guard: CollapseGuard, run: RunState, recipe: Recipe, x: torch.Tensor,
           y: torch.Tensor, eps: float, progress: float, on_event: Callable[[Event], None] | None,
           batch: int, batches: int) -> bool:
    """Collapse check on a fixed validation batch; adapt the automatic schedule. True: stop (rolled back)."""
    clean, robust = robust_accuracy(model, x, y, LpThreat(recipe.norm, eps), steps=recipe.val_steps,
                                    seed=recipe.seed)
    if run.schedule is not None:
        run.schedule = run.schedule.advance(clean, robust, progress)
    if eps < recipe.eps:  # while eps still rises robust accuracy legitimately falls: only keep a snapshot
        guard.best = -1.0
        guard.good_state = copy.deepcopy(model.state_dict())
        return False
    if guard.check(model, robust, clean):
        guard.rollback(model)
        run.stopped = (f"catastrophic overfitting: PGD accuracy on the check batch fell to {robust:.3f} "
                       f"(best {guard.best:.3f}); rolled back to the last good weights")
        if on_event is not None:
            on_event(Event("collapse", run.epoch, batch, batches, info={"robust": robust, "best": guard.best}))
        return True
    return False


def _end_epoch(model: nn.Module, ema: nn.Module | None, swa: AveragedModel | None, run: RunState, recipe: Recipe,
               train: Split, vx: torch.Tensor, vy: torch.Tensor, losses: list[float], eps: float,
               on_event: Callable[[Event], None] | None) -> None:
    evaluated = model
    if ema is not None:
        recompute_bn(ema, train.x[:4096])
        evaluated = ema
    if swa is not None and recipe.swa_start is not None and run.epoch >= recipe.swa_start:
        evaluated = swa_update(swa, model, train.x[:4096])
    clean, robust = robust_accuracy(evaluated, vx, vy, LpThreat(recipe.norm, recipe.eps), steps=recipe.val_steps,
                                    seed=recipe.seed + 1)
    h = run.history
    for key, value in (("epoch", run.epoch), ("train_loss", sum(losses) / max(len(losses), 1)), ("val_clean", clean),
                       ("val_robust", robust), ("eps", eps), ("seconds", round(run.seconds, 2))):
        h[key].append(value)
    if robust > run.best_robust:
        run.best_robust, run.best_epoch = robust, run.epoch
        run.best_state = copy.deepcopy(evaluated.state_dict())
    if on_event is not None:
        on_event(Event("epoch", run.epoch, 0, 0, h["train_loss"][-1], {"clean": clean, "robust": robust}))


def adversarial_train(
    recipe: Recipe,
    out: str | Path,
    *,
    resume: bool = True,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """Train by ``recipe``, evaluate on the test split, save checkpoint + plot (rank 0). Resumes from
    ``out.state.pt`` when ``resume`` and it exists."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, world = rank_world()
    data = load_dataset(recipe.dataset, seed=recipe.seed)
    train = data.train.take(recipe.train_subset)
    model = init_model(lambda: build_model(recipe.arch, data.spec.shape, data.spec.num_classes,
                                           **recipe.arch_kwargs), recipe.seed)
    state_path = out.with_name(out.name + ".state.pt")
    if not resume and state_path.exists() and rank == 0:
        state_path.unlink()
    if world > 1:
        dist.barrier()
    model, run = train_epochs(model, train, data.val, recipe, state_path=state_path, on_event=on_event)
    clean_test = accuracy(model, data.test)
    _, robust_test = robust_accuracy(model, data.test.x[:recipe.test_size], data.test.y[:recipe.test_size],
                                     LpThreat(recipe.norm, recipe.eps), steps=max(recipe.val_steps, 20), seed=1)
    passes = torch.tensor([run.forward, run.backward], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(passes)  # each rank counted its own slice of every batch
    forward, backward = int(passes[0]), int(passes[1])
    seen = min(run.step * recipe.batch_size, run.epoch * len(train))
    metrics = {
        "test_accuracy": clean_test, f"test_robust_accuracy_pgd{max(recipe.val_steps, 20)}": robust_test,
        "test_robust_points": min(recipe.test_size, len(data.test)),
        "val_curve": run.history, "best_epoch": run.best_epoch, "best_val_robust": run.best_robust,
        "stopped": run.stopped, "world_size": world,
        "cost": {"train_seconds": round(run.seconds, 2), "train_cpu_seconds": round(run.cpu_seconds, 2),
                 "forward_passes": forward, "backward_passes": backward,
                 "samples_seen": seen,
                 "multiple_of_standard_training": round((forward + backward) / (2 * max(seen, 1)), 2),
                 "note": "passes exclude validation/collapse checks; standard training = 1 forward + 1 backward"},
    }
    meta = CheckpointMeta(arch=recipe.arch, input_shape=data.spec.shape, num_classes=data.spec.num_classes,
                          dataset=recipe.dataset, arch_kwargs=dict(recipe.arch_kwargs), seed=recipe.seed,
                          recipe=recipe.model_dump(), metrics=metrics)
    if rank == 0:
        save_checkpoint(model, out, meta)
        from bastion.defenses.training.plots import plot_curves

        title = f"{recipe.defense} on {recipe.dataset}, eps {recipe.eps}"
        plot_curves(run.history, out.with_suffix(".png"), title=title)
    return model, meta
