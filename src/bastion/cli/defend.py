"""`bastion defend list` and `bastion defend evaluate`: inference-time defenses (issue 7)."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from bastion.cli.common import console, err, friendly, parse_params

defend_app = typer.Typer(help="Inference-time defenses: list them, or build one and evaluate it honestly.",
                         no_args_is_help=True)


@defend_app.command("list")
def list_cmd() -> None:
    """The registered defenses and their metadata."""
    from rich.table import Table

    from bastion.defenses.inference import DEFENSES

    table = Table()
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for col in ("randomized", "differentiable", "needs data", "paper", "description"):
        table.add_column(col)
    for name in DEFENSES.names():
        s = DEFENSES.get(name)
        table.add_row(name, s.kind, "yes" if s.randomized else "no", "yes" if s.differentiable else "no",
                      "yes" if s.needs_data else "no", s.paper, s.description)
    console.print(table)


def evaluate_defense(defended: Any, base: Any, x: Any, y: Any, threat: Any, *, version: str = "fast",
                     eot_samples: int = 20, seed: int = 0, repeats: int = 5) -> dict[str, Any]:
    """Clean cost, inference overhead, and the standard suite non-adaptively and adaptively (probe plan; for a
    detector also with the detector-aware surrogate, the adaptive figure being the worse of the two)."""
    import torch

    from bastion.defenses.inference import accuracy, false_rejection_rate
    from bastion.defenses.inference.base import median_latency
    from bastion.defenses.inference.detectors import detector_aware_surrogate
    from bastion.evaluation.adaptive import build_adaptation, probe
    from bastion.evaluation.runner import Adaptation
    from bastion.evaluation.suite import run_suite

    row: dict[str, Any] = {"clean_accuracy_base": accuracy(base, x, y), "clean_accuracy": accuracy(defended, x, y),
                           "false_rejection_rate": false_rejection_rate(defended, x)}
    t_base, t_def = median_latency(base, x, repeats), median_latency(defended, x, repeats)
    row["latency_multiple"] = t_def / max(t_base, 1e-9)
    plan, flags = probe(defended, x, y, threat, eot_samples=eot_samples)
    row["plan"], row["flags_fired"] = plan, [f.name for f in flags if f.fired]
    for label, adapt in (("non_adaptive", None), ("adaptive", build_adaptation(defended, plan))):
        start = time.perf_counter()
        out = run_suite(defended, x, y, threat, version=version, adapt=adapt,
                        generator=torch.Generator().manual_seed(seed))
        row[f"robust_{label}"] = float(out.robust.float().mean())
        row[f"seconds_{label}"] = round(time.perf_counter() - start, 1)
    surrogate = detector_aware_surrogate(defended)
    if surrogate is not None:  # detectors: also attack the detector-aware surrogate; keep the worse case
        out = run_suite(defended, x, y, threat, version=version, adapt=Adaptation(surrogate=surrogate),
                        generator=torch.Generator().manual_seed(seed))
        row["robust_detector_aware"] = float(out.robust.float().mean())
        row["robust_adaptive"] = min(row["robust_adaptive"], row["robust_detector_aware"])
    row["gap"] = row["robust_non_adaptive"] - row["robust_adaptive"]
    return row


@defend_app.command("evaluate")
@friendly
def evaluate_cmd(
    defense: str = typer.Option(..., "--defense", "-d", help="defense name (bastion defend list)"),
    param: list[str] = typer.Option([], "--param", "-p", help="defense parameter KEY=VALUE (JSON value)"),
    model: str = typer.Option("mnist-cnn", help="zoo model name or checkpoint path"),
    n: int = typer.Option(100, help="number of test points"),
    norm: str = typer.Option("linf"),
    eps: float = typer.Option(0.3),
    suite: str = typer.Option("fast", help="fast, standard or thorough"),
    eot_samples: int = typer.Option(20, help="EOT draws per gradient for randomized defenses"),
    seed: int = 0,
    threads: int = typer.Option(1, help="torch threads (keep 1 on a shared machine)"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build the defended model, measure its clean cost and inference overhead, and run the standard suite
    with and without adaptation (EOT/BPDA from the probe), so the gap shows."""
    import torch

    from bastion.data import load_dataset
    from bastion.defenses.inference import DEFENSES, build_defense
    from bastion.threat import LpThreat
    from bastion.zoo import load_model

    torch.set_num_threads(threads)
    spec = DEFENSES.get(defense)
    base, meta = load_model(model)
    data = load_dataset(meta.dataset, seed=seed)
    params = parse_params(param)
    if spec.needs_data and "data" not in params:
        params["data"] = data.train if spec.kind in ("distillation", "ensemble") else data.val
    err.print(f"building {defense} around {model} ...")
    defended = build_defense(defense, base, **params)
    x, y = data.test.x[:n], data.test.y[:n]
    threat = LpThreat(norm, eps, lower=data.spec.lower, upper=data.spec.upper)  # type: ignore[arg-type]
    row = evaluate_defense(defended, base, x, y, threat, version=suite, eot_samples=eot_samples, seed=seed)
    row = {"defense": defense, "params": {k: v for k, v in params.items() if k != "data"}, "model": model, "n": n,
           "norm": norm, "eps": eps, "suite": suite, **row}
    if json_out:
        console.print_json(json.dumps(row))
        return
    console.print(f"[bold]{defense}[/] on {model}, {n} points, {norm} eps={eps}, {suite} suite")
    console.print(f"  clean accuracy {100 * row['clean_accuracy']:.1f}% "
                  f"(base {100 * row['clean_accuracy_base']:.1f}%), "
                  f"false rejections {100 * row['false_rejection_rate']:.1f}%, latency x{row['latency_multiple']:.1f}")
    console.print(f"  probe flags: {', '.join(row['flags_fired']) or 'none'}; plan {row['plan']}")
    console.print(f"  robust accuracy: non-adaptive {100 * row['robust_non_adaptive']:.1f}%  adaptive "
                  f"{100 * row['robust_adaptive']:.1f}%  gap {100 * row['gap']:.1f} points")
