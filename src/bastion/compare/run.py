"""Run a comparison: build the defenses in dependency waves, then every measurement, on Dask.

Jobs go through ``bastion.evaluation.sweep.execute`` (a LocalCluster on 127.0.0.1 by default, a given
scheduler, or ``sync`` for in-process). Every finished job is a run in the results store -- builds as
``compare-build`` runs, measurements as ordinary ``evaluate`` and ``certify`` runs -- and a job whose run is
already finished (and whose files are still there) is skipped, so a killed comparison resumes without
retraining finished defenses. The comparison itself is stored as a ``compare`` run whose summary holds the
table rows with the run id behind every number.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.compare.build import BUILD_KIND, build_entry, build_key, checkpoint_path, dependencies, module_path
from bastion.compare.config import CompareConfig, DefenseEntry, ThreatSpec, spec_hash
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.sweep import Event
from bastion.store import Store

COMPARE_KIND = "compare"


@dataclass(frozen=True)
class Measurement:
    """One evaluation or certification job of one defense. ``role``: main, non-adaptive, general, curve, certify."""

    defense: str
    role: str
    kind: str  # "evaluate" or "certify"
    config: dict[str, Any]
    label: str

    def key(self) -> str:
        if self.kind == "evaluate":
            return EvalConfig(**self.config).key()
        from bastion.certification.config import CertifyConfig

        return CertifyConfig(**self.config).key()


@dataclass
class CompareResult:
    run_id: str
    builds: dict[str, str] = field(default_factory=dict)  # defense -> build run id
    measurements: list[tuple[Measurement, str]] = field(default_factory=list)  # (job, run id)


def waves(config: CompareConfig) -> list[list[str]]:
    """Defense names grouped so that every defense comes after its dependencies."""
    done: set[str] = set()
    out: list[list[str]] = []
    left = [d.name for d in config.defenses]
    while left:
        ready = [n for n in left if set(dependencies(config, config.entry(n))) <= done]
        out.append(ready)
        done |= set(ready)
        left = [n for n in left if n not in done]
    return out


def _eval_config(config: CompareConfig, entry: DefenseEntry, path: Path, threat: ThreatSpec, *,
                 adaptive: bool = True, checks: bool = False) -> dict[str, Any]:
    """An evaluation of ``entry`` at ``threat``. The attack-based outcome checks run on the trained-for threat
    only (``checks``): at the other threats the curve and the generalization columns show the same evidence."""
    fields: dict[str, Any] = {
        "model": str(path), "dataset": config.dataset, "n": entry.n or config.eval.n, "norm": threat.norm,
        "eps": threat.eps, "eot_samples": entry.eot_samples or config.eval.eot_samples,
        "batch_size": config.eval.batch_size,
        "seed": config.seed, "adaptive": adaptive, "outcome_checks": checks,
    }
    if threat.attack:
        fields |= {"suite": None, "attack": threat.attack, "max_queries": threat.max_queries}
    else:
        fields["suite"] = config.eval.suite
    return EvalConfig(**fields).model_dump(mode="json")


def curve_threats(config: CompareConfig) -> list[ThreatSpec]:
    """The eps grid of the main norm: ``curve`` plus the larger-eps generalization threats (white-box)."""
    t = config.threat
    extra = [g.eps for g in config.generalization if g.norm == t.norm and not g.attack]
    return [ThreatSpec(norm=t.norm, eps=e) for e in sorted(set(config.curve) - {t.eps} - set(extra))]


def measurements(config: CompareConfig, workdir: Path) -> list[Measurement]:
    """Every job of the comparison, in a fixed order."""
    jobs = []
    for entry in config.defenses:
        path = module_path(workdir, config, entry)
        t = config.threat
        jobs.append(Measurement(entry.name, "main", "evaluate", _eval_config(config, entry, path, t, checks=True),
                                t.label()))
        jobs.append(Measurement(entry.name, "non-adaptive", "evaluate",
                                _eval_config(config, entry, path, t, adaptive=False, checks=True), t.label()))
        if entry.generalization:
            for g in config.generalization:
                jobs.append(Measurement(entry.name, "general", "evaluate", _eval_config(config, entry, path, g),
                                        g.label()))
            for c in curve_threats(config):
                jobs.append(Measurement(entry.name, "curve", "evaluate", _eval_config(config, entry, path, c),
                                        c.label()))
        if entry.certify is not None:
            jobs.append(Measurement(entry.name, "certify", "certify", _certify_config(config, entry, workdir),
                                    f"{entry.certify.norm} {entry.certify.eps:g}"))
    return jobs


def _certify_config(config: CompareConfig, entry: DefenseEntry, workdir: Path) -> dict[str, Any]:
    from bastion.certification.config import CertifyConfig

    c = entry.certify
    assert c is not None
    fields: dict[str, Any] = {"model": f"{checkpoint_path(workdir, config, entry)}.safetensors",
                              "dataset": config.dataset, "n": c.n or entry.n or config.eval.n, "eps": c.eps,
                              "seed": config.seed, "attack": "none"}
    if entry.method == "smoothing":
        fields |= {"method": "smoothing", "sigma": float(entry.params.get("sigma", 0.25)), "samples": c.samples,
                   "n0": 100, "alpha": 0.001}
    else:
        fields |= {"method": "ibp" if c.norm == "linf" else "crown", "norm": c.norm}
    return CertifyConfig(**fields).model_dump(mode="json")


# workers ------------------------------------------------------------------------------------------------
def build_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker side of a build: returns the build record."""
    config = CompareConfig.model_validate(payload["config"])
    return build_entry(config, payload["name"], Path(payload["workdir"]))


def measure_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker side of a measurement: run it into a private store, return the exported run."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "job.sqlite")
        if payload["kind"] == "evaluate":  # names resolved here, then the API runs it
            from bastion.api import run_setup
            from bastion.evaluation.resolve import prepare

            run_id = run_setup(prepare(EvalConfig(**payload["config"])), store=store, progress=False,
                               device="cpu").run_id
        else:
            from bastion.api import run_certify
            from bastion.certification.config import CertifyConfig
            from bastion.certification.job import certify_prepare

            run_id = run_certify(certify_prepare(CertifyConfig(**payload["config"])), store=store, device="cpu",
                                 progress=False).run_id
        exported = store.export_run(run_id)
        store.close()
    return exported


# driver -------------------------------------------------------------------------------------------------
def run_compare(
    config: CompareConfig,
    store: Store,
    workdir: Path,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_event: Callable[[Event], None] | None = None,
) -> CompareResult:
    """Build every defense and run every measurement not yet finished in ``store``; record the comparison."""
    from bastion.compare.table import summarize
    from bastion.evaluation.sweep import LazyClient, dask_client

    workdir = Path(workdir) / config.name
    result = CompareResult("")
    with LazyClient(scheduler, workers, dask_client) as client:
        _build_all(config, store, workdir, client, result, on_event)
        _measure_all(config, store, workdir, client, result, on_event)
    key = spec_hash(config, sorted(result.builds.items()), [r for _, r in result.measurements])
    run_id = store.find_finished(COMPARE_KIND, key)
    if run_id is None:
        run_id = store.create_run(COMPARE_KIND, key, config.model_dump(mode="json"), config.seed, _env())
        store.finish_run(run_id, summarize(config, store, result))
    result.run_id = run_id
    return result


def _env() -> dict[str, Any]:
    from bastion.evaluation.job import environment

    return environment()


def _build_all(config: CompareConfig, store: Store, workdir: Path, client: Any, result: CompareResult,
               on_event: Callable[[Event], None] | None) -> None:
    from bastion.evaluation.sweep import execute

    total, done = len(config.defenses), 0
    for wave in waves(config):
        todo = []
        for name in wave:
            entry = config.entry(name)
            finished = store.find_finished(BUILD_KIND, build_key(config, entry))
            if finished and module_path(workdir, config, entry).exists():
                result.builds[name] = finished
                done += 1
                if on_event:
                    on_event(Event("build", name, finished, True, done, total))
            else:
                todo.append(name)
        payloads = [{"config": config.model_dump(mode="json"), "name": n, "workdir": str(workdir)} for n in todo]
        for payload, record in execute(build_job, payloads, client.get() if payloads else None):
            name = payload["name"]
            entry = config.entry(name)
            run_id = store.create_run(BUILD_KIND, build_key(config, entry), {"defense": entry.model_dump(
                mode="json"), "comparison": config.name}, config.seed, _env())
            store.finish_run(run_id, record)
            result.builds[name] = run_id
            done += 1
            if on_event:
                on_event(Event("build", name, run_id, False, done, total))


def _measure_all(config: CompareConfig, store: Store, workdir: Path, client: Any, result: CompareResult,
                 on_event: Callable[[Event], None] | None) -> None:
    from bastion.evaluation.sweep import execute

    jobs = measurements(config, workdir)
    found: dict[int, str] = {}
    for i, job in enumerate(jobs):
        run_id = store.find_finished("evaluate" if job.kind == "evaluate" else "certify", job.key())
        if run_id:
            found[i] = run_id
    done = 0
    for i, run_id in found.items():
        done += 1
        if on_event:
            on_event(Event("measure", f"{jobs[i].defense} {jobs[i].role} {jobs[i].label}", run_id, True, done,
                           len(jobs)))
    todo = [i for i in range(len(jobs)) if i not in found]
    payloads = [{"index": i, "kind": jobs[i].kind, "config": jobs[i].config} for i in todo]
    for payload, exported in execute(measure_job, payloads, client.get() if payloads else None):
        i = payload["index"]
        found[i] = store.import_run(exported)
        done += 1
        if on_event:
            on_event(Event("measure", f"{jobs[i].defense} {jobs[i].role} {jobs[i].label}", found[i], False, done,
                           len(jobs)))
    result.measurements = [(jobs[i], found[i]) for i in range(len(jobs))]
