"""`bastion evaluate` and `bastion attack`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import typer

from bastion.cli.common import console, err, friendly, progress_bar


def _run_evaluation(config: Any, store_path: Path | None, fresh: bool) -> None:
    from bastion.evaluate.job import Progress as JobProgress
    from bastion.evaluate.job import default_report_dir, evaluate
    from bastion.evaluate.report import write_reports
    from bastion.evaluate.store import Store

    store = Store(store_path)
    what = config.attack or f"{config.suite} suite"
    with progress_bar() as bar:
        task = bar.add_task(f"{what} {config.norm} eps={config.eps}", total=config.n, info="")

        def tick(p: JobProgress) -> None:
            if p.resumed:
                err.print(f"resuming an unfinished run with the same configuration: {p.resumed} points already done")
            stage = f" ({p.stage})" if p.stage else ""
            bar.update(task, total=p.total, completed=p.done, info=f"broken {p.broken}{stage}")

        outcome = evaluate(config, store, fresh=fresh, on_progress=tick)
    run = store.get_run(outcome.run_id)
    paths = write_reports(run, default_report_dir(store, run.id), store)
    s = outcome.summary
    console.print(paths["markdown"].read_text(), markup=False)
    fired = s.get("flags_fired") or []
    if fired:
        err.print(f"[bold yellow]gradient-masking flags:[/] {', '.join(fired)} (see the report)")
    console.print(f"[bold]clean accuracy {100 * s['clean_accuracy']:.2f}%  robust accuracy "
                  f"{100 * s['robust_accuracy']:.2f}%[/]  run {run.id}")
    console.print("reports: " + "  ".join(str(p) for p in paths.values()), soft_wrap=True)


@friendly
def evaluate_cmd(
    model: str = typer.Option("mnist-cnn", help="zoo model name or checkpoint path"),
    dataset: str | None = typer.Option(None, help="data set (default: the one the model was trained on)"),
    split: str = typer.Option("test"),
    n: int = typer.Option(1000, help="number of points from the start of the split"),
    norm: str = typer.Option("linf", help="linf, l2 or l1"),
    eps: float = typer.Option(0.3, help="radius of the threat model"),
    suite: str = typer.Option("standard", help="fast, standard or thorough"),
    eot_samples: int = typer.Option(20, help="draws per gradient when the model is found to be randomized"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    store: Path | None = typer.Option(None, help="SQLite results store (default $BASTION_HOME/bastion.sqlite)"),
    fresh: bool = typer.Option(False, help="start a new run instead of resuming an unfinished identical one"),
) -> None:
    """The standard adaptive evaluation: attack cascade, gradient-masking diagnostics, robustness curve,
    costs; writes JSON, Markdown and HTML reports and records the run."""
    from bastion.evaluate.config import EvalConfig

    config = EvalConfig(model=model, dataset=dataset, split=split, n=n, norm=norm, eps=eps, suite=suite,
                        eot_samples=eot_samples, batch_size=batch_size, seed=seed)
    _run_evaluation(config, store, fresh)


@friendly
def attack_cmd(
    name: str = typer.Argument(..., help="attack name (bastion attacks list)"),
    model: str = typer.Option("mnist-cnn", help="zoo model name or checkpoint path"),
    target: str | None = typer.Option(None, help="remote black-box endpoint URL (JSON protocol, see README) "
                                                 "instead of --model; needs --dataset"),
    max_queries: int | None = typer.Option(None, help="hard per-point query budget"),
    dataset: str | None = typer.Option(None),
    split: str = typer.Option("test"),
    n: int = typer.Option(1000),
    norm: str = typer.Option("linf"),
    eps: float = typer.Option(..., help="radius of the threat model"),
    param: list[str] = typer.Option([], "--param", "-p", help="attack hyperparameter KEY=VALUE (JSON value)"),
    targeted: bool = typer.Option(False, help="push each point to a target class instead of any wrong class"),
    targets: str = typer.Option("random", help="target class per point when --targeted: random (any other class) "
                                               "or least-likely (the class the model scores lowest)"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    store: Path | None = typer.Option(None),
    fresh: bool = typer.Option(False),
) -> None:
    """Run one registered attack against a model and record the result."""
    from bastion.attacks import get_attack
    from bastion.errors import InvalidInputError
    from bastion.evaluate.config import EvalConfig, TargetChoice

    get_attack(name)
    if targets not in get_args(TargetChoice):
        raise InvalidInputError(f"--targets {targets!r} is not a target choice; use "
                                f"{' or '.join(get_args(TargetChoice))}.")
    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--param {item!r} is not KEY=VALUE; e.g. --param steps=50")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    config = EvalConfig(model=target or model, dataset=dataset, split=split, n=n, norm=norm, eps=eps, suite=None,
                        attack=name, params=params, batch_size=batch_size, seed=seed, max_queries=max_queries,
                        targeted=targeted, targets=targets)
    _run_evaluation(config, store, fresh)


