"""`bastion compare`: the defense comparison table, measured (issue 9)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bastion.cli.common import STORE, console, friendly, progress_bar


@friendly
def compare_cmd(
    config: str = typer.Argument("mnist", help="compare YAML file, or a built-in preset: mnist, fashion-mnist"),
    quick: bool = typer.Option(False, "--quick", help="the preset's quick variant (under 15 min on 2 CPU cores)"),
    scheduler: str | None = typer.Option(None, help="tcp://HOST:PORT of a Dask scheduler (workers must share the "
                                                    "work folder); default: a LocalCluster on 127.0.0.1; 'sync' "
                                                    "runs in this process"),
    workers: int = typer.Option(2, min=1, help="LocalCluster worker processes"),
    store: str | None = STORE,
    workdir: Path | None = typer.Option(None, help="where trained defenses are kept (default: in the store's home, "
                                                   "compare/)"),
    out: Path | None = typer.Option(None, help="report folder (default: in the store's home, compare/NAME/report)"),
) -> None:
    """Train or load every defense of the comparison, measure effectiveness (adaptive and not), generalization,
    cost and clean accuracy on the same points, and write the table (Markdown, HTML, JSON) and plots.
    Finished defenses and measurements are reused, so a killed comparison resumes where it stopped."""
    from bastion.compare.config import load_compare
    from bastion.compare.run import Event, measurements, run_compare, waves
    from bastion.compare.table import write_outputs
    from bastion.store import Store

    cfg = load_compare(config, quick=quick)
    st = Store(store)
    root = workdir or st.home / "compare"
    started = time.perf_counter()
    total = len(cfg.defenses) + len(measurements(cfg, root / cfg.name))
    console.print(f"[bold]{cfg.name}[/]: {len(cfg.defenses)} defenses in {len(waves(cfg))} build waves, "
                  f"{total - len(cfg.defenses)} measurements; work folder {root / cfg.name}")
    with progress_bar() as bar:
        task = bar.add_task("compare", total=total, info="")
        reused = 0

        def tick(e: Event) -> None:
            nonlocal reused
            reused += e.skipped
            bar.advance(task)
            bar.update(task, info=f"{e.phase} {e.name}" + (f" ({reused} reused)" if reused else ""))

        result = run_compare(cfg, st, root, scheduler=scheduler, workers=workers, on_event=tick)
    folder = out or root / cfg.name / "report"
    paths = write_outputs(st, result.run_id, folder)
    _print_table(st, result.run_id)
    console.print(f"compare run {result.run_id} in {time.perf_counter() - started:.0f} s; table: {paths['markdown']}"
                  f", {paths['html']}")


def _print_table(store: object, run_id: str) -> None:
    from rich.table import Table

    summary = store.get_run(run_id).summary or {}  # type: ignore[attr-defined]
    table = Table("defense", "clean", "adaptive", "non-adaptive", "train x", "latency x", "generalization",
                  "limitations", title=f"{summary['name']}: {summary['threat']}")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in summary["rows"]:
        gen = ", ".join(f"{g['threat']} {pct(g['robust'])}" for g in r["generalization"]) or "-"
        table.add_row(r["defense"], pct(r["clean_accuracy"]), pct(r["robust_adaptive"]), pct(r["robust_non_adaptive"]),
                      "-" if r["train_multiple"] is None else f"{r['train_multiple']:.1f}",
                      "-" if r["latency_multiple"] is None else f"{r['latency_multiple']:.1f}", gen,
                      "; ".join(r["limitations"]) or "-")
    console.print(table)
