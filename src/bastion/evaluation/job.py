"""The evaluation job: model + data + threat + (suite or attack) -> per-sample rows in the store -> summary.

Batches are independent (each has its own generator seeded from the run seed and the batch number),
so a killed run resumes at the first unfinished batch and gives the same numbers as an uninterrupted one.
In suite mode the diagnostics probe runs first and its adaptation plan is stored with the run, so a
resumed run attacks exactly as the first part did.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.evaluation import claims
from bastion.evaluation.adaptive import build_adaptation, detector_adaptation, probe
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.outcome import outcome_checks
from bastion.evaluation.resolve import prepare, resolve_device
from bastion.evaluation.runner import AttackResult, choose_targets, run_attack
from bastion.evaluation.setup import Setup
from bastion.evaluation.suite import SuiteOutcome, run_suite, stage_dicts, stages_from_dicts, suite_stages
from bastion.evaluation.summary import summarize
from bastion.store import Store

KIND = "evaluate"
PROBE_POINTS = 64
GALLERY = 8
NO_ADAPTATION: dict[str, Any] = {"eot_samples": None, "bpda_modules": [], "log_probabilities": False,
                                 "detector_aware": False}


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    broken: int
    resumed: int = 0
    stage: str = ""


@dataclass(frozen=True)
class EvalOutcome:
    run_id: str
    summary: dict[str, Any]
    resumed_points: int
    reused: bool = False  # a finished identical run was returned instead of running again


def batch_generator(seed: int, batch: int, device: torch.device) -> torch.Generator:
    """The one rule for random numbers: a generator on the data's device, seeded from the run seed and the batch."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch)


def environment(device: torch.device | None = None) -> dict[str, Any]:
    from bastion import __version__

    return {
        "bastion": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "machine": platform.machine(),
        "device": _device_name(device),
    }


def _device_name(device: torch.device | None) -> str:
    if device is None:
        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _rows(result: AttackResult, labels: Tensor, index: list[int]) -> list[tuple[Any, ...]]:
    return [
        (index[i], int(labels[i]), int(result.clean_pred[i]), int(result.adv_pred[i]), int(result.clean_correct[i]),
         int(result.success[i]), float(result.norm[i]) if torch.isfinite(result.norm[i]) else None,
         int(result.counts.forward[i]), int(result.counts.backward[i]))
        for i in range(len(index))
    ]


def evaluate(
    config: EvalConfig,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    device: str | torch.device | None = "cpu",
) -> EvalOutcome:
    """Run (or resume) the evaluation ``config`` and record it in ``store``."""
    return run(prepare(config), store, fresh=fresh, on_progress=on_progress, device=device)


def run(
    setup: Setup,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    device: str | torch.device | None = "cpu",
) -> EvalOutcome:
    """Run (or resume) the evaluation of a prepared ``setup`` (model, points, threat, config) into ``store``.

    Batches go to ``device`` one at a time; each batch draws its random numbers from a generator on that device
    seeded from (seed, batch number), so a resumed run repeats the uninterrupted one on the same device."""
    cfg = setup.config
    done_before = None if fresh else store.find_finished(KIND, cfg.key())
    if done_before is not None:  # the same run, finished: its numbers are stored, nothing is recomputed
        summary = store.get_run(done_before).summary or {}
        if on_progress:
            on_progress(Progress(len(setup.points), len(setup.points), 0, len(setup.points), stage="reused"))
        return EvalOutcome(done_before, summary, len(setup.points), reused=True)
    dev = resolve_device(device)
    setup.model.to(dev)
    record = (KIND, cfg.key(), cfg.model_dump(mode="json"), cfg.seed, environment(dev))
    run_id = store.create_run(*record) if fresh else store.open_run(*record)
    try:
        return _execute(setup, store, run_id, on_progress, dev)
    except Exception as exc:  # the finished batches stay; the same call resumes the run
        store.set_status(run_id, "failed")
        store.put_artifact(run_id, "error", f"{type(exc).__name__}: {exc}")
        raise


def _execute(setup: Setup, store: Store, run_id: str, on_progress: Callable[[Progress], None] | None,
             dev: torch.device) -> EvalOutcome:
    cfg = setup.config
    plan = _plan(store, run_id, setup, dev) if cfg.suite else {}
    done = store.done_batches(run_id, cfg.done_part)
    n, size = len(setup.points), cfg.batch_size
    starts = list(range(0, n, size))
    finished = already = sum(min(size, n - s) for b, s in enumerate(starts) if b in done)
    broken = sum(r["success"] for r in store.samples(run_id, cfg.done_part))
    if on_progress:
        on_progress(Progress(finished, n, broken, already))
    owner, todo = claims.Owner.current(), [b for b in range(len(starts)) if b not in done]
    while todo:  # each batch computed by the process that claims it (claims.py); the others wait for it
        done, ran = store.done_batches(run_id, cfg.done_part), False
        for b in list(todo):
            start, stop = starts[b], min(starts[b] + size, n)
            if b not in done and not claims.take(store, run_id, f"claim/{b}", owner):
                continue
            if b not in done:
                broken += _batch(store, run_id, setup, plan, b, start, stop, on_progress, finished, broken, dev)
                ran = True
            todo.remove(b)
            finished += stop - start
            if on_progress:
                on_progress(Progress(finished, n, broken))
        if todo and not ran:
            time.sleep(claims.POLL_S)
    if cfg.suite and cfg.outcome_checks and store.get_artifact(run_id, "outcome_flags") is None:
        if on_progress:
            on_progress(Progress(finished, n, broken, stage="diagnostics"))
        def check(what: str) -> None:
            if on_progress:
                on_progress(Progress(finished, n, broken, stage=f"diagnostics: {what}"))

        def memo(name: str, compute: Callable[[], list[bool]]) -> list[bool]:
            stored = store.get_artifact(run_id, name)
            if stored is None:
                stored = compute()
                store.put_artifact(run_id, name, stored)
            return list(stored)

        flags = outcome_checks(_on(setup, dev), build_adaptation(setup.model, plan), cfg, PROBE_POINTS, check, memo)
        store.put_artifact(run_id, "outcome_flags", [f.to_dict() for f in flags])
    summary = summarize(store, run_id, cfg, setup.num_classes)
    if hasattr(setup.model, "sent"):
        summary["remote_queries"] = sum(store.get_artifact(run_id, f"queries/{b}") or 0 for b in range(len(starts)))
    store.finish_run(run_id, summary)
    return EvalOutcome(run_id, summary, already)


def _on(setup: Setup, dev: torch.device) -> Setup:
    """The setup with its points (and per-feature bounds) on ``dev``."""
    if setup.points.x.device == dev:
        return setup
    return replace(setup, points=Split(setup.points.x.to(dev), setup.points.y.to(dev)))


def _plan(store: Store, run_id: str, setup: Setup, dev: torch.device) -> dict[str, Any]:
    plan = store.get_artifact(run_id, "adaptation")
    if plan is None and not setup.config.adaptive:
        plan = dict(NO_ADAPTATION)
        store.put_artifact(run_id, "adaptation", plan)
    if plan is None:
        x, y = setup.points.x[:PROBE_POINTS].to(dev), setup.points.y[:PROBE_POINTS].to(dev)
        plan, flags = probe(setup.model, x, y, setup.threat, eot_samples=setup.config.eot_samples)
        store.put_artifact(run_id, "probe_flags", [f.to_dict() for f in flags])
        store.put_artifact(run_id, "adaptation", plan)
    if store.get_artifact(run_id, "stages") is None:  # the run keeps the cascade it starts with
        cfg = setup.config
        stages = suite_stages(cfg.suite or "standard", cfg.norm, bool(plan.get("detector_aware")))
        store.put_artifact(run_id, "stages", stage_dicts(stages))
    return plan


def _batch(store: Store, run_id: str, setup: Setup, plan: dict[str, Any], b: int, start: int, stop: int,
           on_progress: Callable[[Progress], None] | None, finished: int, broken: int, dev: torch.device) -> int:
    """Attack one batch, record it, return how many points it broke."""
    cfg = setup.config
    x, y = setup.points.x[start:stop].to(dev), setup.points.y[start:stop].to(dev)
    generator = batch_generator(cfg.seed, b, dev)
    t0 = time.perf_counter()
    if cfg.attack is not None:
        sent = getattr(setup.model, "sent", None)  # a remote endpoint counts every input it was sent
        targets = None
        if cfg.targeted:  # drawn from the batch's own generator, so a resumed run picks the same targets
            targets = choose_targets(setup.model, x, y, cfg.targets, setup.num_classes, generator)
            store.put_artifact(run_id, f"targets/{b}", targets.tolist())
        result = run_attack(setup.model, x, y, setup.threat, cfg.attack, targets=targets, generator=generator,
                            max_queries=cfg.max_queries, **cfg.params)
        if sent is not None:  # the probe, clean check and re-check are queries too, not only the attack's
            store.put_artifact(run_id, f"queries/{b}", setup.model.sent - sent)
        store.record_batch(run_id, cfg.attack, b, start, stop, time.perf_counter() - t0,
                           _rows(result, y.cpu(), list(range(start, stop))), result.outside_threat)
        return int(result.success.sum())

    def tick(stage: Any) -> None:
        if on_progress:
            on_progress(Progress(finished, len(setup.points), broken, stage=stage.stage.part))

    assert cfg.suite is not None
    out = run_suite(setup.model, x, y, setup.threat, version=cfg.suite, adapt=build_adaptation(setup.model, plan),
                    generator=generator, on_stage=tick, detector_adapt=detector_adaptation(setup.model, plan),
                    stages=stages_from_dicts(store.get_artifact(run_id, "stages")))
    y = y.cpu()
    for st in out.stages:
        attacked = st.attacked.cpu()
        index = (attacked.nonzero().flatten() + start).tolist()
        store.record_batch(run_id, st.stage.part, b, start, stop, st.seconds, _rows(st.result, y[attacked], index),
                           st.result.outside_threat)
        if st.peak_rss_mb is not None:  # the largest over the run's batches
            peak = max(store.get_artifact(run_id, f"peak_rss_mb/{st.stage.part}") or 0.0, st.peak_rss_mb)
            store.put_artifact(run_id, f"peak_rss_mb/{st.stage.part}", peak)
    _record_gallery(store, run_id, setup.model, y, out, start, x)
    store.record_batch(run_id, "worst", b, start, stop, time.perf_counter() - t0, _worst_rows(out, y, start))
    return int(out.broken.sum())


def _worst_rows(out: SuiteOutcome, y: Tensor, start: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(len(y)):
        fwd = sum(int(s.result.counts.forward[_pos(s.attacked, i)]) for s in out.stages if s.attacked[i])
        bwd = sum(int(s.result.counts.backward[_pos(s.attacked, i)]) for s in out.stages if s.attacked[i])
        norm = float(out.best_norm[i])
        rows.append((start + i, int(y[i]), -1, -1, int(out.clean_correct[i]), int(out.broken[i]),
                     norm if np.isfinite(norm) else None, fwd, bwd))
    return rows


def _pos(mask: Tensor, i: int) -> int:
    return int(mask[:i].sum())


def _record_gallery(store: Store, run_id: str, model: nn.Module, y: Tensor, out: SuiteOutcome, start: int,
                    x: Tensor) -> None:
    gallery = store.get_artifact(run_id, "gallery") or []
    if len(gallery) >= GALLERY:
        return
    for i in out.broken.nonzero().flatten().tolist()[: GALLERY - len(gallery)]:
        with torch.no_grad():
            pred = int(model(out.adversarial[i:i + 1].to(x)).argmax(1))
        gallery.append({"index": start + i, "label": int(y[i]), "adversarial_prediction": pred,
                        "broken_by": out.first_broken_by[i], "clean": x[i].tolist(),
                        "adversarial": out.adversarial[i].tolist()})
    store.put_artifact(run_id, "gallery", gallery)


def default_report_dir(store: Store, run_id: str) -> Path:
    """``runs/RUN_ID`` in the store's home: beside a SQLite file, or ``$BASTION_HOME`` for a server store."""
    return store.home / "runs" / run_id
