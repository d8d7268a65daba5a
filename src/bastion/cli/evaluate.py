"""`bastion evaluate` and `bastion attack`."""

from __future__ import annotations

import os
from typing import Any, get_args

import typer

from bastion.cli.common import STORE, console, err, friendly, parse_number, parse_params, read_threat


def _run_evaluation(config: Any, store_path: str | None, fresh: bool, device: str) -> None:
    from bastion.api import run_setup
    from bastion.evaluation.job import default_report_dir
    from bastion.evaluation.resolve import prepare, resolve_device
    from bastion.store import Store

    resolve_device(device)  # a device that is not there is said before anything is loaded
    setup = prepare(config)  # names and files are resolved here; everything after is the Python API's
    if setup.note:
        err.print(f"data: {setup.note}")
    store = Store(store_path)
    report = run_setup(setup, device=device, store=store, fresh=fresh,
                       report_dir=lambda run_id: default_report_dir(store, run_id))
    s = report.summary
    console.print(report.to_markdown(), markup=False)
    fired = s.get("flags_fired") or []
    if fired:
        err.print(f"[bold yellow]gradient-masking flags:[/] {', '.join(fired)} (see the report)")
    console.print(f"[bold]clean accuracy {100 * s['clean_accuracy']:.2f}%  robust accuracy "
                  f"{100 * s['robust_accuracy']:.2f}%[/]  run {report.run_id}")
    console.print("reports: " + "  ".join(str(p) for p in report.paths.values()), soft_wrap=True)


MODEL = typer.Option("mnist-cnn", help="zoo name, bastion checkpoint, TorchScript file, or your own model as "
                                       "path/to/file.py:make_model or package.module:attr (factory, class or module)")
WEIGHTS = typer.Option(None, help="weights for a model given as code: .safetensors, or .pt/.pth state dict")
DATA = typer.Option(None, help="your own data instead of --dataset: .npz/.pt (x, y), a .csv with a label column, "
                               "or an image folder with one sub-folder per class; bounds are inferred and printed")
LABEL_COLUMN = typer.Option(None, help="CSV data: the label column (default: label, class, target or y)")
LOWER = typer.Option(None, help="override the inferred lower bound of --data (a number)")
UPPER = typer.Option(None, help="override the inferred upper bound of --data (a number)")
THREAT = typer.Option(None, help="a threat saved as JSON (the to_dict() form: per-feature bounds, a mask of "
                                 "features that may change); its norm and eps must match --norm and --eps")
DEVICE = typer.Option("auto", help="auto (a CUDA GPU if present), cpu, cuda or cuda:N")


@friendly
def evaluate_cmd(
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    dataset: str | None = typer.Option(None, help="data set (default: the one the model was trained on)"),
    data: str | None = DATA,
    label_column: str | None = LABEL_COLUMN,
    lower: float | None = LOWER,
    upper: float | None = UPPER,
    threat: str | None = THREAT,
    split: str = typer.Option("test"),
    n: int = typer.Option(1000, help="number of points from the start of the split"),
    norm: str = typer.Option("linf", help="linf, l2 or l1"),
    eps: str = typer.Option("0.3", help="radius of the threat model: a number or a fraction such as 8/255"),
    suite: str = typer.Option("standard", help="fast, standard or thorough"),
    eot_samples: int = typer.Option(20, help="draws per gradient when the model is found to be randomized"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    device: str = DEVICE,
    store: str | None = STORE,
    fresh: bool = typer.Option(False, help="start a new run instead of resuming an unfinished identical one"),
) -> None:
    """The standard adaptive evaluation: attack cascade, gradient-masking diagnostics, robustness curve,
    costs; writes JSON, Markdown and HTML reports and records the run."""
    from bastion.evaluation.config import EvalConfig

    config = EvalConfig(model=model, weights=weights, dataset=dataset, data=data, label_column=label_column,
                        lower=lower, upper=upper, threat=read_threat(threat), split=split, n=n, norm=norm,
                        eps=parse_number(eps, "--eps"),
                        suite=suite, eot_samples=eot_samples, batch_size=batch_size, seed=seed)
    _run_evaluation(config, store, fresh, device)


@friendly
def attack_cmd(
    name: str = typer.Argument(..., help="attack name (bastion attacks list)"),
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    target: str | None = typer.Option(None, help="remote black-box endpoint URL (JSON protocol, see README) "
                                                 "instead of --model; needs --dataset"),
    api_key: str | None = typer.Option(None, envvar="BASTION_API_KEY", show_default=False,
                                       help="API key for --target, sent as the X-API-Key header (never stored)"),
    max_queries: int | None = typer.Option(None, help="hard per-point query budget"),
    dataset: str | None = typer.Option(None),
    data: str | None = DATA,
    label_column: str | None = LABEL_COLUMN,
    lower: float | None = LOWER,
    upper: float | None = UPPER,
    threat: str | None = THREAT,
    split: str = typer.Option("test"),
    n: int = typer.Option(1000),
    norm: str = typer.Option("linf"),
    eps: str = typer.Option(..., help="radius of the threat model: a number or a fraction such as 8/255"),
    param: list[str] = typer.Option([], "--param", "-p", help="attack hyperparameter KEY=VALUE (JSON value)"),
    targeted: bool = typer.Option(False, help="push each point to a target class instead of any wrong class"),
    targets: str = typer.Option("random", help="target class per point when --targeted: random (any other class) "
                                               "or least-likely (the class the model scores lowest)"),
    batch_size: int = typer.Option(500),
    seed: int = 0,
    device: str = DEVICE,
    store: str | None = STORE,
    fresh: bool = typer.Option(False),
) -> None:
    """Run one registered attack against a model and record the result."""
    from bastion.attacks import get_attack
    from bastion.attacks.base import check_params
    from bastion.errors import InvalidInputError
    from bastion.evaluation.config import EvalConfig, TargetChoice

    spec = get_attack(name)
    if targets not in get_args(TargetChoice):
        raise InvalidInputError(f"--targets {targets!r} is not a target choice; use "
                                f"{' or '.join(get_args(TargetChoice))}.")
    if target is not None and not target.startswith(("http://", "https://")):
        raise InvalidInputError(f"--target must be an http:// or https:// URL of a model endpoint; got {target!r} "
                                "(a model file or name goes to --model).")
    params = parse_params(param, "--param")
    check_params(spec, params)  # before any model or data is loaded
    if api_key:  # read by the HTTP client from the environment, so it never enters the run's config or record
        os.environ["BASTION_API_KEY"] = api_key
    config = EvalConfig(model=target or model, weights=weights, dataset=dataset, data=data,
                        label_column=label_column, lower=lower, upper=upper, threat=read_threat(threat), split=split,
                        n=n, norm=norm,
                        eps=parse_number(eps, "--eps"), suite=None, attack=name, params=params, batch_size=batch_size,
                        seed=seed, max_queries=max_queries, targeted=targeted, targets=targets)
    _run_evaluation(config, store, fresh, device)


