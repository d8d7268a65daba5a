"""The ``bastion`` command line: one entry point, rich tables and progress bars."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from bastion.errors import BastionError

app = typer.Typer(help="bastion: measure and improve the adversarial robustness of deep-learning models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Offline data sets.", no_args_is_help=True)
models_app = typer.Typer(help="The model zoo.", no_args_is_help=True)
attacks_app = typer.Typer(help="Registered attacks.", no_args_is_help=True)
runs_app = typer.Typer(help="The results store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(attacks_app, name="attacks")
app.add_typer(runs_app, name="runs")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn bastion's own errors and invalid configs into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                return fn(*args, **kwargs)
        except BastionError as exc:
            err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
            err.print(f"[bold red]error:[/] invalid configuration: {msgs}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err)


# data -------------------------------------------------------------------------------------------
@data_app.command("list")
@friendly
def data_list() -> None:
    """List the registered data sets."""
    from bastion.data import DATASETS

    table = Table("name", "modality", "shape", "classes", "bounds", "source")
    for name in DATASETS:
        s = DATASETS.get(name).spec
        table.add_row(name, s.modality, "x".join(map(str, s.shape)), str(s.num_classes), f"[{s.lower}, {s.upper}]",
                      s.source)
    console.print(table)


@data_app.command("show")
@friendly
def data_show(name: str, seed: int = typer.Option(0, help="seed of the train/val/test split")) -> None:
    """Load a data set and show its spec and split sizes."""
    from bastion.data import load_dataset

    d = load_dataset(name, seed=seed)
    s = d.spec
    table = Table(show_header=False)
    for key, value in [("name", s.name), ("modality", s.modality), ("description", s.description),
                       ("shape", "x".join(map(str, s.shape))), ("classes", ", ".join(s.classes)),
                       ("bounds", f"[{s.lower}, {s.upper}]"), ("source", s.source), ("licence", s.licence),
                       ("train / val / test", f"{len(d.train)} / {len(d.val)} / {len(d.test)} (seed {seed})")]:
        table.add_row(key, value)
    console.print(table)


# models -----------------------------------------------------------------------------------------
@models_app.command("list")
@friendly
def models_list() -> None:
    """List zoo models and architectures."""
    from bastion.zoo import ARCHITECTURES, MODELS

    table = Table("model", "data set", "description", title="Trained models")
    for name in MODELS:
        e = MODELS.get(name)
        table.add_row(name, e.dataset, e.description)
    console.print(table)
    arch = Table("architecture", "modality", "description", title="Architectures (bastion train --arch)")
    for name in ARCHITECTURES:
        a = ARCHITECTURES.get(name)
        arch.add_row(name, a.modality, a.description)
    console.print(arch)


@models_app.command("show")
@friendly
def models_show(name: str) -> None:
    """Show a zoo model's or checkpoint's metadata."""
    from dataclasses import asdict

    from bastion.zoo import load_model

    model, meta = load_model(name)
    params = sum(p.numel() for p in model.parameters())
    console.print_json(json.dumps(asdict(meta) | {"parameters": params}, default=str))


# attacks ----------------------------------------------------------------------------------------
@attacks_app.command("list")
@friendly
def attacks_list() -> None:
    """List registered attacks with their norms, goal, access and paper."""
    from bastion.attacks import ATTACKS

    table = Table("attack", "norms", "goal", "access", "paper")
    for name in ATTACKS:
        a = ATTACKS.get(name)
        table.add_row(name, ", ".join(a.norms), a.goal, a.access, a.paper)
    console.print(table)


# train ------------------------------------------------------------------------------------------
@app.command()
@friendly
def train(
    arch: str = typer.Option("cnn", help="architecture (bastion models list)"),
    dataset: str = typer.Option("mnist", help="data set (bastion data list)"),
    out: Path = typer.Option(..., help="checkpoint path stem: writes OUT.safetensors and OUT.json"),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(128, min=1),
    lr: float = typer.Option(1e-3, min=0.0),
    patience: int = typer.Option(2, min=1, help="early stopping: epochs without validation improvement"),
    seed: int = 0,
) -> None:
    """Train a model normally (Adam, early stopping on validation accuracy) and save a checkpoint."""
    from bastion.zoo.train import TrainConfig, TrainEvent, train_and_save

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed)
    with _progress() as bar:
        task = bar.add_task(f"train {arch} on {dataset}", total=None, info="")

        def tick(e: TrainEvent) -> None:
            bar.update(task, total=e.batches, completed=e.batch + 1,
                       description=f"epoch {e.epoch + 1}/{epochs}", info=f"loss {e.loss:.3f}")

        _, meta = train_and_save(arch, dataset, out, config, on_batch=tick)
    m = meta.metrics
    console.print(f"test accuracy [bold]{100 * m['test_accuracy']:.2f}%[/] (best epoch {m['best_epoch'] + 1}, "
                  f"{m['train_seconds']} s) -> {out}.safetensors")


# evaluate ---------------------------------------------------------------------------------------
def _run_evaluation(config: Any, store_path: Path | None, fresh: bool) -> None:
    from bastion.evaluate.job import Progress as JobProgress
    from bastion.evaluate.job import default_report_dir, evaluate
    from bastion.evaluate.report import write_reports
    from bastion.evaluate.store import Store

    store = Store(store_path)
    with _progress() as bar:
        task = bar.add_task(f"{config.attack} {config.norm} eps={config.eps}", total=config.n, info="")

        def tick(p: JobProgress) -> None:
            if p.resumed:
                err.print(f"resuming an unfinished run with the same configuration: {p.resumed} points already done")
            bar.update(task, total=p.total, completed=p.done, info=f"broken {p.broken}")

        outcome = evaluate(config, store, fresh=fresh, on_progress=tick)
    run = store.get_run(outcome.run_id)
    js, md = write_reports(run, default_report_dir(store, run.id))
    s = outcome.summary
    console.print(md.read_text(), markup=False)
    console.print(f"[bold]clean accuracy {100 * s['clean_accuracy']:.2f}%  robust accuracy "
                  f"{100 * s['robust_accuracy']:.2f}%[/]  run {run.id}\nreports: {js}  {md}")


@app.command("evaluate")
@friendly
def evaluate_cmd(
    model: str = typer.Option("mnist-cnn", help="zoo model name or checkpoint path"),
    dataset: str | None = typer.Option(None, help="data set (default: the one the model was trained on)"),
    split: str = typer.Option("test"),
    n: int = typer.Option(1000, help="number of points from the start of the split"),
    norm: str = typer.Option("linf", help="linf, l2 or l1"),
    eps: float = typer.Option(0.3, help="radius of the threat model"),
    steps: int = typer.Option(100, help="PGD iterations"),
    restarts: int = typer.Option(1, help="PGD random restarts (spent only on points not yet broken)"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    store: Path | None = typer.Option(None, help="SQLite results store (default $BASTION_HOME/bastion.sqlite)"),
    fresh: bool = typer.Option(False, help="start a new run instead of resuming an unfinished identical one"),
) -> None:
    """Clean and PGD robust accuracy of a model; writes JSON and Markdown reports and records the run."""
    from bastion.evaluate.config import EvalConfig

    config = EvalConfig(model=model, dataset=dataset, split=split, n=n, norm=norm, eps=eps, attack="pgd",
                        params={"steps": steps, "restarts": restarts}, batch_size=batch_size, seed=seed)
    _run_evaluation(config, store, fresh)


@app.command("attack")
@friendly
def attack_cmd(
    name: str = typer.Argument(..., help="attack name (bastion attacks list)"),
    model: str = typer.Option("mnist-cnn", help="zoo model name or checkpoint path"),
    dataset: str | None = typer.Option(None),
    split: str = typer.Option("test"),
    n: int = typer.Option(1000),
    norm: str = typer.Option("linf"),
    eps: float = typer.Option(..., help="radius of the threat model"),
    param: list[str] = typer.Option([], "--param", "-p", help="attack hyperparameter KEY=VALUE (JSON value)"),
    targeted: bool = typer.Option(False, help="not yet supported on the CLI"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    store: Path | None = typer.Option(None),
    fresh: bool = typer.Option(False),
) -> None:
    """Run one registered attack against a model and record the result."""
    from bastion.attacks import get_attack
    from bastion.errors import InvalidInputError
    from bastion.evaluate.config import EvalConfig

    get_attack(name)
    if targeted:
        raise InvalidInputError("Targeted attacks are available from Python (run_attack(targets=...)); "
                                "drop --targeted on the CLI.")
    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--param {item!r} is not KEY=VALUE; e.g. --param steps=50")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    config = EvalConfig(model=model, dataset=dataset, split=split, n=n, norm=norm, eps=eps, attack=name,
                        params=params, batch_size=batch_size, seed=seed)
    _run_evaluation(config, store, fresh)


# runs -------------------------------------------------------------------------------------------
@runs_app.command("list")
@friendly
def runs_list(limit: int = 20, store: Path | None = typer.Option(None)) -> None:
    """List recorded runs, newest first."""
    from bastion.evaluate.store import Store

    table = Table("kind", "status", "model", "data", "threat", "attack", "clean", "robust")
    table.columns.insert(0, Column("run", no_wrap=True))
    for r in Store(store).list_runs(limit):
        c, s = r.config, r.summary or {}
        table.add_row(r.id, r.kind, r.status, str(c.get("model")), str(c.get("dataset")),
                      f"{c.get('norm')} {c.get('eps')}", str(c.get("attack")),
                      f"{100 * s['clean_accuracy']:.2f}%" if s else "-",
                      f"{100 * s['robust_accuracy']:.2f}%" if s else "-")
    console.print(table)


@runs_app.command("show")
@friendly
def runs_show(run_id: str, store: Path | None = typer.Option(None)) -> None:
    """Show one run's configuration, environment and summary as JSON."""
    from bastion.evaluate.report import report_dict
    from bastion.evaluate.store import Store

    console.print_json(json.dumps(report_dict(Store(store).get_run(run_id))))


@app.command()
@friendly
def report(run_id: str, store: Path | None = typer.Option(None),
           out: Path | None = typer.Option(None, help="folder for the reports (default: beside the store)")) -> None:
    """Render the JSON and Markdown reports of any stored run."""
    from bastion.evaluate.job import default_report_dir
    from bastion.evaluate.report import write_reports
    from bastion.evaluate.store import Store

    st = Store(store)
    run = st.get_run(run_id)
    js, md = write_reports(run, out or default_report_dir(st, run.id))
    console.print(f"{js}\n{md}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
