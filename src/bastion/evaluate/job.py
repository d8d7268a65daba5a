"""The evaluation job: model + data + threat + attack -> per-sample outcomes in the store -> report.

Batches are independent (each has its own generator seeded from the run seed and the batch number),
so a killed run resumes at the first unfinished batch and gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.data import load_dataset
from bastion.errors import InvalidInputError
from bastion.evaluate.config import EvalConfig
from bastion.evaluate.runner import AttackResult, run_attack
from bastion.evaluate.store import Store
from bastion.threat import LpThreat
from bastion.zoo import load_model

KIND = "evaluate"


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    broken: int
    resumed: int = 0


@dataclass(frozen=True)
class EvalOutcome:
    run_id: str
    summary: dict[str, Any]
    resumed_points: int


def environment() -> dict[str, Any]:
    from bastion import __version__

    return {
        "bastion": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "machine": platform.machine(),
    }


def _rows(result: AttackResult, labels: torch.Tensor, start: int) -> list[tuple[Any, ...]]:
    return [
        (start + i, int(labels[i]), int(result.clean_pred[i]), int(result.adv_pred[i]), int(result.clean_correct[i]),
         int(result.success[i]), float(result.norm[i]) if torch.isfinite(result.norm[i]) else None,
         int(result.counts.forward[i]), int(result.counts.backward[i]))
        for i in range(len(labels))
    ]


def evaluate(
    config: EvalConfig,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> EvalOutcome:
    """Run (or resume) the evaluation ``config`` and record it in ``store``."""
    model, meta = load_model(config.model)
    dataset = config.dataset or meta.dataset
    data = load_dataset(dataset, seed=config.seed)
    if tuple(data.spec.shape) != tuple(meta.input_shape):
        raise InvalidInputError(
            f"Model {config.model!r} takes inputs of shape {tuple(meta.input_shape)} but {dataset!r} has "
            f"{tuple(data.spec.shape)}; pick the data set the model was trained on ({meta.dataset!r})."
        )
    points = data.split(config.split).take(config.n)
    threat = LpThreat(config.norm, config.eps, lower=data.spec.lower, upper=data.spec.upper)
    full = config.model_copy(update={"dataset": dataset})
    run_id = None if fresh else store.find_unfinished(KIND, full.key())
    resumed = run_id is not None
    run_id = run_id or store.create_run(KIND, full.key(), full.model_dump(mode="json"), config.seed, environment())
    done = store.done_batches(run_id, config.attack)
    starts = list(range(0, len(points), config.batch_size))
    finished = sum(min(config.batch_size, len(points) - s) for b, s in enumerate(starts) if b in done)
    already = finished
    broken = sum(r["success"] for r in store.samples(run_id, config.attack)) if resumed else 0
    if on_progress:
        on_progress(Progress(finished, len(points), broken, finished))
    for b, start in enumerate(starts):
        if b in done:
            continue
        x, y = points.x[start:start + config.batch_size], points.y[start:start + config.batch_size]
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + b)
        t0 = time.perf_counter()
        result = run_attack(model, x, y, threat, config.attack, generator=generator, **config.params)
        store.record_batch(run_id, config.attack, b, start, start + len(y), time.perf_counter() - t0,
                           _rows(result, y, start), result.outside_threat)
        finished += len(y)
        broken += int(result.success.sum())
        if on_progress:
            on_progress(Progress(finished, len(points), broken))
    summary = summarize(store, run_id, full)
    store.finish_run(run_id, summary)
    return EvalOutcome(run_id, summary, already)


def summarize(store: Store, run_id: str, config: EvalConfig) -> dict[str, Any]:
    """Aggregate the stored per-sample rows of a run into its summary (the numbers reports show)."""
    rows = store.samples(run_id, config.attack)
    n = len(rows)
    clean = sum(r["clean_correct"] for r in rows)
    broken = sum(r["success"] for r in rows)
    norms = [r["norm"] for r in rows if r["success"] and r["norm"] is not None]
    fwd = sum(r["forward"] for r in rows)
    bwd = sum(r["backward"] for r in rows)
    totals = store.batch_totals(run_id, config.attack)
    return {
        "n": n,
        "clean_accuracy": clean / n,
        "robust_accuracy": (clean - broken) / n,
        "attack_success_rate": broken / clean if clean else 0.0,
        "median_norm_of_successes": float(np.median(norms)) if norms else None,
        "forward_passes": fwd,
        "backward_passes": bwd,
        "passes_per_point": (fwd + bwd) / n,
        "attack_seconds": round(totals["seconds"], 3),
        "outside_threat": totals["outside_threat"],
    }


def default_report_dir(store: Store, run_id: str) -> Path:
    return store.path.parent / "runs" / run_id
