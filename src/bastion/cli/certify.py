"""`bastion certify` and `bastion certify-train`: certified robustness (issue 8)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from bastion.cli.common import STORE, console, err, friendly, parse_params, progress_bar


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        from bastion.errors import InvalidInputError

        raise InvalidInputError(f"{what} {text!r} is not a comma-separated list of numbers; e.g. 0.1,0.2,0.3") from None
    return values


@friendly
def certify_cmd(
    method: str = typer.Option(..., help="smoothing, ibp, crown or lipschitz"),
    model: str = typer.Option(..., help="zoo model name or checkpoint path"),
    dataset: str | None = typer.Option(None, help="data set (default: the one the model was trained on)"),
    split: str = typer.Option("test"),
    n: int = typer.Option(100, help="number of points from the start of the split"),
    eps: float | None = typer.Option(None, help="headline radius (L2 for smoothing/lipschitz, L-inf for ibp/crown)"),
    radii: str | None = typer.Option(None, help="radii of the curve, comma-separated (default per method)"),
    norm: str | None = typer.Option(None, help="crown only: linf (default) or l2"),
    sigma: float | None = typer.Option(None, help="smoothing: noise level (train the model with the same sigma)"),
    preset: str = typer.Option("quick", help="smoothing: quick (n0 64, n 1000) or paper (n0 100, n 100000)"),
    n0: int | None = typer.Option(None, help="smoothing: selection samples (overrides the preset)"),
    samples: int | None = typer.Option(None, help="smoothing: estimation samples n (overrides the preset)"),
    alpha: float | None = typer.Option(None, help="smoothing: failure probability (overrides the preset)"),
    bound: str = typer.Option("crown", help="crown: crown (CROWN intermediate bounds) or crown-ibp (faster)"),
    attack: str = typer.Option("apgd", help="empirical attack on the same points: apgd, pgd, fmn or none"),
    param: list[str] = typer.Option([], "--param", "-p", help="attack hyperparameter KEY=VALUE (JSON value)"),
    batch_size: int = typer.Option(100, help="points per recorded batch"),
    seed: int = 0,
    store: str | None = STORE,
    fresh: bool = typer.Option(False, help="start a new run instead of resuming an unfinished identical one"),
    device: str = typer.Option("auto", help="auto (a CUDA GPU if present), cpu, cuda or cuda:N"),
    out: Path | None = typer.Option(None, help="folder for report.json, report.md, certified.png"),
) -> None:
    """Certify N points (certified accuracy vs radius) and attack the same points (empirical robust accuracy)."""
    from bastion.certification.job import CertifyConfig
    from bastion.errors import InvalidInputError
    from bastion.evaluation.job import default_report_dir
    from bastion.store import Store

    methods = ("smoothing", "ibp", "crown", "lipschitz")
    if method not in methods:
        import difflib

        close = difflib.get_close_matches(method, methods, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidInputError(f"Unknown certification method {method!r}.{hint} Use one of {', '.join(methods)}.")
    if method == "smoothing" and sigma is None:
        raise InvalidInputError("Randomized smoothing needs the noise level: pass --sigma, e.g. --sigma 0.25 "
                                "(the sigma the model was trained with).")
    if method != "smoothing" and (sigma is not None or n0 is not None or samples is not None):
        raise InvalidInputError(f"--sigma, --n0 and --samples are smoothing options; {method} does not use them.")
    for name, value in (("eps", eps), ("sigma", sigma)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise InvalidInputError(f"--{name} must be finite and non-negative; got {value}.")
    config = CertifyConfig(
        method=method, model=model, dataset=dataset, split=split, n=n, eps=eps, radii=_floats(radii, "--radii"),
        norm=norm, sigma=sigma, preset=preset, n0=n0, samples=samples, alpha=alpha, bound=bound, attack=attack,
        attack_params=parse_params(param, "--param") or None, batch_size=batch_size, seed=seed,
    )
    from bastion.api import run_certify
    from bastion.certification.job import certify_prepare

    st = Store(store)
    report = run_certify(certify_prepare(config), store=st, fresh=fresh, device=device,
                         report_dir=lambda run_id: out or default_report_dir(st, run_id))
    s, paths = report.summary, report.paths
    console.print(report.to_markdown(), markup=False)
    console.print(f"[bold]certified accuracy at {s['eps']:g}: {100 * s['certified_accuracy_at_eps']:.2f}%  "
                  f"empirical robust accuracy: {100 * s['robust_accuracy']:.2f}%[/]  run {report.run_id}\n"
                  f"reports: {paths['json']}  {paths['markdown']}  {paths['png']}")
    if s["violations"]:
        err.print(f"[yellow]warning:[/] certified radius above the attack's adversarial norm on points "
                  f"{s['violations']} (see the report).")


@friendly
def certify_train_cmd(
    method: str = typer.Option(..., help="gaussian (for smoothing), ibp, crown-ibp or lipschitz"),
    out: Path = typer.Option(..., help="checkpoint path stem: writes OUT.safetensors and OUT.json"),
    dataset: str = typer.Option("mnist", help="data set (bastion data list)"),
    arch: str | None = typer.Option(None, help="architecture (default crown-cnn; lipschitz-mlp for lipschitz)"),
    epochs: int = typer.Option(8, min=1),
    warmup_epochs: float = typer.Option(1.0, help="ibp/crown-ibp: epochs at eps 0"),
    ramp_epochs: float = typer.Option(4.0, help="ibp/crown-ibp: epochs of the linear eps ramp"),
    eps: float = typer.Option(0.4, help="training radius (L-inf for ibp/crown-ibp, L2 margin for lipschitz)"),
    sigma: float = typer.Option(0.25, help="gaussian: noise level"),
    batch_size: int = typer.Option(128, min=1),
    lr: float = typer.Option(1e-3, min=0.0),
    seed: int = 0,
) -> None:
    """Train a certifiable model (Gaussian noise, IBP, CROWN-IBP, 1-Lipschitz) and save a checkpoint."""
    from bastion.certification.train import CertTrainConfig, train_certified
    from bastion.zoo.train import TrainEvent

    config = CertTrainConfig(method=method, epochs=epochs, warmup_epochs=warmup_epochs, ramp_epochs=ramp_epochs,
                             batch_size=batch_size, lr=lr, eps=eps, sigma=sigma, seed=seed)
    config.check()
    with progress_bar() as bar:
        task = bar.add_task(f"{method} training on {dataset}", total=None, info="")

        def tick(e: TrainEvent) -> None:
            bar.update(task, total=e.batches * epochs, completed=e.epoch * e.batches + e.batch + 1,
                       info=f"epoch {e.epoch + 1}/{epochs} loss {e.loss:.3f}")

        result = train_certified(config, dataset=dataset, arch=arch, out=out, on_batch=tick)
    m = result.meta.metrics
    console.print(f"[bold]test accuracy {100 * m['test_accuracy']:.2f}%[/] after {result.steps} steps "
                  f"({m['train_seconds']} s); checkpoint {out}.safetensors")


def register(app: typer.Typer) -> None:
    """Add `certify` and `certify-train` to the main app."""
    app.command("certify")(certify_cmd)
    app.command("certify-train")(certify_train_cmd)
