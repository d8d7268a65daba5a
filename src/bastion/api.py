"""The public Python API: evaluate or attack any ``nn.Module`` on tensors or a ``DataLoader`` in one call.

    import bastion
    report = bastion.evaluate(model, x, y, bastion.LpThreat("linf", 8 / 255))
    print(report.robust_accuracy, report.flags)

Both calls run exactly what ``bastion evaluate`` / ``bastion attack`` run (the CLI resolves names and files, then
calls these): the probe and its adaptation, the attack cascade, the runner's re-check, the outcome diagnostics, the
robustness curve and the costs, batch by batch into a results store (resumable), and return a typed ``Report``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.evaluation.config import EvalConfig, TargetChoice
from bastion.evaluation.job import Progress, run
from bastion.evaluation.report import report_dict, write_reports
from bastion.evaluation.runner import reject_class
from bastion.evaluation.setup import Setup
from bastion.report import Report
from bastion.store import Run, Store
from bastion.threat import LpThreat
from bastion.validate import probe_model
from bastion.zoo.user import fingerprint

Suite = Literal["fast", "standard", "thorough"]
StoreLike = Store | str | Path | None
ReportDir = str | Path | Callable[[str], Path] | None  # a folder, or the folder for a run id


def evaluate(model: nn.Module, inputs: Tensor | Iterable[Any], labels: Tensor | None = None,
             threat: LpThreat | None = None, *, suite: Suite = "standard", device: str | torch.device | None = None,
             seed: int = 0, store: StoreLike = None, report_dir: str | Path | None = None, progress: bool = True,
             batch_size: int = 500, eot_samples: int = 20, adaptive: bool = True, name: str | None = None,
             fresh: bool = False) -> Report:
    """The standard adaptive evaluation of ``model`` on ``inputs``/``labels`` under ``threat``.

    ``inputs`` is a tensor (then ``labels`` too) or a ``DataLoader``/iterable of ``(inputs, labels)`` batches.
    ``device``: ``None``/``"auto"`` (a CUDA GPU if present), ``"cpu"``, ``"cuda:N"``; the model is moved there.
    ``store``: ``None`` keeps the run in a temporary store deleted afterwards (the report holds everything);
    a path, database URL or ``Store`` records it there, and calling again with the same arguments resumes an
    unfinished run (``fresh=True`` starts over). ``report_dir`` also writes report.json/.md/.html there.
    ``name`` labels the model in reports (default: its class and a hash of its weights).
    """
    mode = dict(suite=suite, eot_samples=eot_samples, adaptive=adaptive)
    setup = _setup(model, inputs, labels, threat, mode, seed, batch_size, name)
    return run_setup(setup, device=device, store=store, report_dir=report_dir, progress=progress, fresh=fresh)


def attack(model: nn.Module, inputs: Tensor | Iterable[Any], labels: Tensor | None = None,
           threat: LpThreat | None = None, name: str = "apgd", *, params: dict[str, Any] | None = None,
           targeted: bool = False, targets: TargetChoice = "random", max_queries: int | None = None,
           device: str | torch.device | None = None, seed: int = 0, store: StoreLike = None,
           report_dir: str | Path | None = None, progress: bool = True, batch_size: int = 500,
           model_name: str | None = None, fresh: bool = False) -> Report:
    """One registered attack ``name`` (``bastion attacks list``) through the runner, with the same arguments as
    ``evaluate``; ``params`` are the attack's hyperparameters, ``targeted`` pushes each point to a target class
    chosen by ``targets`` (random other class or least-likely class)."""
    mode = dict(suite=None, attack=name, params=params or {}, targeted=targeted, targets=targets,
                max_queries=max_queries)
    setup = _setup(model, inputs, labels, threat, mode, seed, batch_size, model_name)
    return run_setup(setup, device=device, store=store, report_dir=report_dir, progress=progress, fresh=fresh)


def certify(model: nn.Module, inputs: Tensor | Iterable[Any], labels: Tensor | None = None, *,
            method: Literal["smoothing", "ibp", "crown", "lipschitz"], eps: float | None = None,
            sigma: float | None = None, norm: Literal["linf", "l2"] | None = None, radii: list[float] | None = None,
            lower: float = 0.0, upper: float = 1.0, seed: int = 0, device: str | torch.device | None = None,
            store: StoreLike = None, report_dir: ReportDir = None, progress: bool = True, batch_size: int = 100,
            name: str | None = None, fresh: bool = False, **options: Any) -> Report:
    """Certify ``model`` on the points (randomized smoothing with ``sigma``, IBP, CROWN / CROWN-IBP bounds, or a
    1-Lipschitz margin certificate) and attack the same points, as ``bastion certify`` does: certified accuracy
    (a lower bound on robust accuracy) next to the attack's robust accuracy (an upper bound) at every radius.
    ``options`` are the other ``CertifyConfig`` fields (``preset``, ``samples``, ``alpha``, ``bound``, ``attack``,
    ``attack_params``...). ``Report.robust_accuracy`` is the empirical one; ``summary["certified_accuracy_at_eps"]``
    the certified one."""
    from bastion.certification.config import CertifyConfig
    from bastion.certification.job import CertifySetup, check_method

    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    x, y = _tensors(inputs, labels)
    model.eval()
    check_method(model, method)
    label = name or f"python:{type(model).__module__}.{type(model).__qualname__}@{fingerprint(model)}"
    config = CertifyConfig(method=method, model=label, dataset=f"tensors:{_data_hash(x, y)}", n=len(y), eps=eps,
                           sigma=sigma, norm=norm, radii=radii, batch_size=batch_size, seed=seed, **options)
    setup = CertifySetup(model, Split(x, y), lower, upper, config)
    return run_certify(setup, device=device, store=store, report_dir=report_dir, progress=progress, fresh=fresh)


def run_certify(setup: Any, *, device: str | torch.device | None = None, store: StoreLike = None,
                report_dir: ReportDir = None, progress: bool = True, fresh: bool = False) -> Report:
    """Run a prepared ``CertifySetup`` and report it: what ``certify`` does after building the setup, and what
    ``bastion certify`` calls after resolving names (``certification.job.certify_prepare``)."""
    from bastion.certification.job import run_certify_setup

    with _opened(store) as st, _certify_bar(progress) as tick:
        outcome = run_certify_setup(setup, st, fresh=fresh, on_progress=tick, device=device)
        return _certify_report(st.get_run(outcome.run_id), report_dir)


@contextmanager
def _certify_bar(progress: bool) -> Iterator[Callable[[Any], None] | None]:
    if not progress:
        yield None
        return
    from bastion.progress import progress_bar

    with progress_bar(transient=True) as bar:
        task = bar.add_task("certify", total=None, info="")  # the total arrives with the first tick

        def tick(p: Any) -> None:
            if p.resumed:
                bar.console.print(f"resuming an unfinished run with the same configuration: {p.resumed} points done")
            bar.update(task, total=p.total, completed=p.done, info=f"certified {p.certified}")

        yield tick


def _certify_report(run_: Run, report_dir: ReportDir) -> Report:
    from bastion.certification import report as certify_report

    folder = report_dir(run_.id) if callable(report_dir) else report_dir
    paths: dict[str, Path] = {}
    if folder is not None:
        paths = dict(zip(("json", "markdown", "png"), certify_report.write_reports(run_, Path(folder)), strict=True))
    return Report(run_, certify_report.report_dict(run_), paths)


def run_setup(setup: Setup, *, device: str | torch.device | None = None, store: StoreLike = None,
              report_dir: ReportDir = None, progress: bool = True, fresh: bool = False) -> Report:
    """Run a prepared ``Setup`` (model, points, threat, config) and report it: what ``evaluate``/``attack`` do after
    building the setup, and what the CLI calls after resolving names and files (``evaluate.job.prepare``)."""
    with _opened(store) as st, _bar(progress, setup.config) as tick:
        outcome = run(setup, st, on_progress=tick, device=device, fresh=fresh)
        return _report(st.get_run(outcome.run_id), st, report_dir)


def _setup(model: nn.Module, inputs: Tensor | Iterable[Any], labels: Tensor | None, threat: LpThreat | None,
           mode: dict[str, Any], seed: int, batch_size: int, name: str | None) -> Setup:
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if threat is None:
        raise InvalidInputError("Give a threat model, e.g. bastion.LpThreat('linf', 8 / 255).")
    if not isinstance(threat, LpThreat):
        raise InvalidInputError(
            f"The evaluation job runs Lp threats so far, not {getattr(threat, 'kind', type(threat).__name__)}; run "
            "other threat kinds batch by batch with bastion.evaluation.runner.run_attack.")
    x, y = _tensors(inputs, labels)
    outputs = probe_model(model, x[:1].to(_first_device(model)))  # one point: no copy of the data set
    num_classes = outputs - 1 if reject_class(model) is not None else outputs  # a detector's extra class
    return Setup(model, Split(x, y), threat, _config(model, x, y, threat, mode, seed, batch_size, name), num_classes)


def _tensors(inputs: Tensor | Iterable[Any], labels: Tensor | None) -> tuple[Tensor, Tensor]:
    if isinstance(inputs, Tensor):
        if labels is None:
            raise InvalidInputError("Give labels with input tensors (one class index per input), or pass a DataLoader "
                                    "of (inputs, labels) batches.")
        return inputs.detach().cpu(), torch.as_tensor(labels).cpu()
    xs, ys = [], []
    for batch in inputs:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InvalidInputError("A data loader must yield (inputs, labels) batches.")
        xs.append(torch.as_tensor(batch[0]).detach().cpu())
        ys.append(torch.as_tensor(batch[1]).cpu())
    if not xs:
        raise InvalidInputError("The data loader yielded no batches.")
    return torch.cat(xs), torch.cat(ys)


def _first_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _config(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, mode: dict[str, Any], seed: int,
            batch_size: int, name: str | None) -> EvalConfig:
    eps = threat.eps if not isinstance(threat.eps, Tensor) else None
    if eps is None:
        raise InvalidInputError("bastion.evaluate takes one eps for the run; per-sample eps is for run_attack.")
    label = name or f"python:{type(model).__module__}.{type(model).__qualname__}@{fingerprint(model)}"
    data = f"tensors:{_data_hash(x, y)}"
    plain = not threat.per_feature and threat.mask is None  # else the run records the whole threat
    return EvalConfig(model=label, data=data, n=len(y), norm=threat.norm, eps=float(eps), seed=seed,
                      batch_size=batch_size, threat=None if plain else threat.to_dict(), **mode)


def _data_hash(x: Tensor, y: Tensor) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in (x, y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


@contextmanager
def _opened(store: StoreLike) -> Iterator[Store]:
    if isinstance(store, Store):
        yield store
        return
    if store is not None:
        st = Store(store)
        try:
            yield st
        finally:
            st.close()
        return
    with tempfile.TemporaryDirectory(prefix="bastion-") as tmp:
        st = Store(Path(tmp) / "run.sqlite")
        try:
            yield st
        finally:
            st.close()


@contextmanager
def _bar(progress: bool, cfg: EvalConfig) -> Iterator[Callable[[Progress], None] | None]:
    if not progress:
        yield None
        return
    from bastion.progress import progress_bar

    what = cfg.attack or f"{cfg.suite} suite"
    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"{what} {cfg.norm} eps={cfg.eps}", total=cfg.n, info="")

        def tick(p: Progress) -> None:
            if p.stage == "reused":
                bar.console.print("the same run is already finished in this store: its stored numbers are shown "
                                  "(--fresh, or fresh=True, runs it again)")
            elif p.resumed:
                bar.console.print(f"resuming an unfinished run with the same configuration: {p.resumed} points done")
            stage = f" ({p.stage})" if p.stage else ""
            bar.update(task, total=p.total, completed=p.done, info=f"broken {p.broken}{stage}")

        yield tick


def _report(run_: Run, store: Store, report_dir: ReportDir) -> Report:
    folder = report_dir(run_.id) if callable(report_dir) else report_dir
    paths = write_reports(run_, Path(folder), store) if folder is not None else {}
    return Report(run_, report_dict(run_, store), paths)
