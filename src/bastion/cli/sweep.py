"""`bastion sweep`: many evaluations on Dask distributed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bastion.cli.common import STORE, console, friendly, progress_bar


@friendly
def sweep_cmd(
    config: Path = typer.Argument(..., help="sweep YAML: defaults, models, threats, shards"),
    scheduler: str | None = typer.Option(None, help="tcp://HOST:PORT of a Dask scheduler; default: a LocalCluster "
                                                    "on 127.0.0.1; 'sync' runs in this process"),
    workers: int = typer.Option(2, min=1, help="LocalCluster worker processes"),
    store: str | None = STORE,
    out: Path | None = typer.Option(None, help="write the aggregated table as JSON here"),
) -> None:
    """Evaluate every (model x threat x eps x shard) job; finished jobs are skipped, so a killed sweep resumes."""
    from bastion.evaluation.sweep import JobDone, aggregate, load_sweep, run_sweep
    from bastion.store import Store

    sweep = load_sweep(config)
    total = len(sweep.jobs())
    st = Store(store)
    with progress_bar() as bar:
        task = bar.add_task("sweep", total=total, info="")
        skipped = 0

        def tick(done: JobDone) -> None:
            nonlocal skipped
            skipped += done.skipped
            bar.advance(task)
            bar.update(task, info=f"{skipped} already done" if skipped else "")

        results = run_sweep(sweep, st, scheduler=scheduler, workers=workers, on_done=tick)
    rows = aggregate(results)
    table = Table("model", "threat", "n", "clean", "robust", "passes", "attack time", "flags")
    for r in rows:
        table.add_row(r["model"], f"{r['norm']} {r['eps']}", str(r["n"]), f"{100 * r['clean_accuracy']:.2f}%",
                      f"{100 * r['robust_accuracy']:.2f}%", str(r["forward_passes"] + r["backward_passes"]),
                      f"{r['attack_seconds']:.1f} s", ", ".join(r["flags"]) or "-")
    console.print(table)
    if out:
        out.write_text(json.dumps(rows, indent=2) + "\n")
        console.print(f"wrote {out}")
