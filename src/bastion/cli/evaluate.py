"""`bastion evaluate` and `bastion attack`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import console, err, friendly, progress_bar


def _run_evaluation(config: Any, store_path: Path | None, fresh: bool) -> None:
    from bastion.evaluate.job import Progress as JobProgress
    from bastion.evaluate.job import default_report_dir, evaluate
    from bastion.evaluate.report import write_reports
    from bastion.evaluate.store import Store

    store = Store(store_path)
    with progress_bar() as bar:
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


