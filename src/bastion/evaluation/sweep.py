"""Sweeps: many (model x threat x eps x data shard) evaluations, run on Dask distributed.

A ``LocalCluster`` on 127.0.0.1 by default, or an existing scheduler (``tcp://HOST:PORT``). Each job runs
the ordinary evaluation job in a worker against a private temporary store, and ships the finished run
back; the client writes it into the results store as soon as it arrives. A job whose run is already
finished in the store is skipped, so a killed sweep resumes without redoing finished jobs.

Config (YAML)::

    defaults: {suite: fast, n: 500, batch_size: 250, seed: 0}
    models: [mnist-cnn, ccexam-mnist]
    threats: [{norm: linf, eps: [0.1, 0.2, 0.3]}, {norm: l2, eps: 2.0}]
    shards: 2          # split the n points of each job into this many jobs
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion.errors import InvalidInputError, config_errors
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import KIND
from bastion.evaluation.resolve import prepare
from bastion.store import Store
from bastion.yamlfile import read_yaml_mapping


class ThreatSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    norm: str
    eps: float | list[float]


class SweepConfig(BaseModel):
    """A validated sweep description (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    defaults: dict[str, Any] = Field(default_factory=dict)
    models: list[str]
    threats: list[ThreatSpec]
    shards: int = Field(1, ge=1)

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Every default is an EvalConfig field of the right type, said before any job is made."""
        try:
            EvalConfig.model_validate({"model": "check"} | value)
        except ValidationError as exc:
            raise ValueError(config_errors(exc)) from None
        return value

    def jobs(self) -> list[EvalConfig]:
        """One EvalConfig per (model, norm, eps, shard); validated up front so a typo fails before any work."""
        out = []
        n = int(self.defaults.get("n", 1000))
        size = -(-n // self.shards)
        for model in self.models:
            for threat in self.threats:
                for eps in threat.eps if isinstance(threat.eps, list) else [threat.eps]:
                    for start in range(0, n, size):
                        fields = self.defaults | {"model": model, "norm": threat.norm, "eps": eps,
                                                  "offset": int(self.defaults.get("offset", 0)) + start,
                                                  "n": min(size, n - start)}
                        out.append(EvalConfig(**fields))
        return out


def load_sweep(path: str | Path) -> SweepConfig:
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"Sweep config {p} not found; pass a YAML file (see `bastion sweep --help`).")
    return SweepConfig(**read_yaml_mapping(p, "sweep config"))


def run_job(config: dict[str, Any]) -> dict[str, Any]:
    """Worker side: resolve one job's names, run it through the API into a private store, return the exported run."""
    import torch

    from bastion.api import run_setup

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "job.sqlite")
        report = run_setup(prepare(EvalConfig(**config)), store=store, progress=False, device="cpu")
        exported = store.export_run(report.run_id)
        store.close()
    return exported


@dataclass(frozen=True)
class JobDone:
    config: EvalConfig
    run_id: str
    skipped: bool
    summary: dict[str, Any]


def _pending(jobs: list[EvalConfig], store: Store) -> Iterator[tuple[EvalConfig, str | None]]:
    for job in jobs:
        yield job, store.find_finished(KIND, _full_key(job))


def _full_key(job: EvalConfig) -> str:
    return prepare(job).config.key()


def run_sweep(
    sweep: SweepConfig,
    store: Store,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_done: Callable[[JobDone], None] | None = None,
) -> list[JobDone]:
    """Run every job not yet finished in ``store``; ``scheduler=None`` starts a LocalCluster on 127.0.0.1,
    ``scheduler="sync"`` runs the jobs one after another in this process (no Dask)."""
    jobs = sweep.jobs()
    results: list[JobDone] = []
    todo = []
    for job, finished in _pending(jobs, store):
        if finished:
            done = JobDone(job, finished, True, store.get_run(finished).summary or {})
            results.append(done)
            if on_done:
                on_done(done)
        else:
            todo.append(job)
    if not todo:
        return results
    with dask_client(scheduler, workers) as client:
        for payload, exported in execute(run_job, [job.model_dump(mode="json") for job in todo], client):
            job = EvalConfig(**payload)
            run_id = store.import_run(exported)
            done = JobDone(job, run_id, False, store.get_run(run_id).summary or {})
            results.append(done)
            if on_done:
                on_done(done)
    return results


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """``None``: a LocalCluster of ``workers`` single-threaded processes on 127.0.0.1; ``"sync"``: no Dask
    (yields None, jobs run in this process); anything else: the address of a running Dask scheduler."""
    if scheduler == "sync":
        yield None
        return
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    client = Client(cluster if cluster is not None else scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@dataclass(frozen=True)
class Event:
    """Progress of a multi-job run (compare, poison): ``phase`` (build, measure, cell ...), ``skipped`` when the
    store already had the finished run."""

    phase: str
    name: str
    run_id: str
    skipped: bool
    done: int
    total: int


class LazyClient:
    """Starts the Dask client on first use only, so a fully reused comparison starts no cluster."""

    def __init__(self, scheduler: str | None, workers: int, factory: Callable[..., Any]) -> None:
        self.scheduler, self.workers, self.factory = scheduler, workers, factory
        self._cm: Any = None
        self._client: Any = None

    def __enter__(self) -> LazyClient:
        return self

    def get(self) -> Any:
        if self._cm is None:
            self._cm = self.factory(self.scheduler, self.workers)
            self._client = self._cm.__enter__()
        return self._client

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def execute(fn: Callable[[Any], Any], payloads: list[Any], client: Any) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(payload)`` for every payload on ``client`` (None: in this process, one after another);
    yield ``(payload, result)`` as each finishes."""
    if client is None:
        for payload in payloads:
            yield payload, fn(payload)
        return
    from dask.distributed import as_completed

    futures = {client.submit(fn, payload, pure=False): k for k, payload in enumerate(payloads)}
    for future in as_completed(futures):
        yield payloads[futures[future]], future.result()


def aggregate(results: list[JobDone]) -> list[dict[str, Any]]:
    """Combine shards: one row per (model, norm, eps) with point-weighted accuracies and summed costs."""
    groups: dict[tuple[str, str, float], list[JobDone]] = {}
    for r in results:
        groups.setdefault((r.config.model, r.config.norm, r.config.eps), []).append(r)
    rows = []
    for (model, norm, eps), items in sorted(groups.items()):
        n = sum(i.summary["n"] for i in items)
        rows.append({
            "model": model, "norm": norm, "eps": eps, "n": n, "shards": len(items),
            "clean_accuracy": sum(i.summary["clean_accuracy"] * i.summary["n"] for i in items) / n,
            "robust_accuracy": sum(i.summary["robust_accuracy"] * i.summary["n"] for i in items) / n,
            "forward_passes": sum(i.summary["forward_passes"] for i in items),
            "backward_passes": sum(i.summary["backward_passes"] for i in items),
            "attack_seconds": sum(i.summary["attack_seconds"] for i in items),
            "flags": sorted({f for i in items for f in i.summary.get("flags_fired", [])}),
            "runs": [i.run_id for i in items],
        })
    return rows
