"""`bastion poison`: the attack x defense poisoning matrix (issue 21)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bastion.cli.common import STORE, console, friendly, progress_bar

poison_app = typer.Typer(help="Data poisoning and backdoors: attacks, defenses, the measured matrix.",
                         no_args_is_help=True)


@poison_app.command("run")
@friendly
def run_cmd(
    config: str = typer.Argument("mnist", help="poisoning YAML file, or a built-in preset: mnist, fashion-mnist"),
    quick: bool = typer.Option(False, "--quick", help="the preset's quick variant (a few minutes on 2 CPU cores)"),
    scheduler: str | None = typer.Option(None, help="tcp://HOST:PORT of a Dask scheduler (workers must share the "
                                                    "work folder); default: a LocalCluster on 127.0.0.1; 'sync' "
                                                    "runs in this process"),
    workers: int = typer.Option(2, min=1, help="LocalCluster worker processes"),
    store: str | None = STORE,
    workdir: Path | None = typer.Option(None, help="where poisoned sets and models are kept (default: in the "
                                                   "store's home, poison/)"),
    out: Path | None = typer.Option(None, help="report folder (default: the work folder's NAME/report)"),
) -> None:
    """Poison the training set with every attack, train on it, apply every defense, and measure clean accuracy,
    attack success rate, detection TPR/FPR/AUC and cost. Finished builds and cells are reused, so a killed matrix
    resumes where it stopped."""
    from bastion.poisoning.config import load_poison
    from bastion.poisoning.matrix import Event, run_matrix
    from bastion.poisoning.table import write_outputs
    from bastion.store import Store

    cfg = load_poison(config, quick=quick)
    st = Store(store)
    root = workdir or st.home / "poison"
    started = time.perf_counter()
    n_cells = len(cfg.attacks) * len(cfg.defenses)
    console.print(f"[bold]{cfg.name}[/]: {len(cfg.attacks)} attacks x {len(cfg.defenses)} defenses on "
                  f"{cfg.dataset}; work folder {root}")
    with progress_bar() as bar:
        task = bar.add_task("poison", total=len(cfg.attacks) + n_cells, info="")
        reused = 0

        def tick(e: Event) -> None:
            nonlocal reused
            if e.phase == "surrogate":
                return
            reused += e.skipped
            bar.advance(task)
            bar.update(task, info=f"{e.phase} {e.name}" + (f" ({reused} reused)" if reused else ""))

        result = run_matrix(cfg, st, root, scheduler=scheduler, workers=workers, on_event=tick)
    paths = write_outputs(st, result.run_id, out or root / cfg.name / "report")
    _print(st.get_run(result.run_id).summary or {})
    console.print(f"poison run {result.run_id} in {time.perf_counter() - started:.0f} s; report: {paths['html']}")


def _print(summary: dict) -> None:
    from rich.table import Table

    from bastion.poisoning.table import cell

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    table = Table("attack", *summary["defenses"], title="attack success rate / clean accuracy")
    for a in summary["attacks"]:
        table.add_row(a, *[f"{pct(cell(summary, a, d).get('attack_success_rate'))} / "
                           f"{pct(cell(summary, a, d).get('clean_accuracy'))}" for d in summary["defenses"]])
    console.print(table)


@poison_app.command("list")
def list_cmd() -> None:
    """The poisoning attacks and defenses, with their papers and default parameters."""
    from rich.table import Table

    from bastion.poisoning import POISON_ATTACKS, POISON_DEFENSES

    t = Table("attack", "kind", "paper", "defaults", title="poisoning attacks")
    for name in POISON_ATTACKS:
        s = POISON_ATTACKS.get(name)
        t.add_row(name, s.kind, s.paper, ", ".join(f"{k}={v}" for k, v in s.defaults.items()))
    console.print(t)
    t = Table("defense", "stage", "paper", "defaults", title="poisoning defenses")
    for name in POISON_DEFENSES:
        s = POISON_DEFENSES.get(name)
        t.add_row(name, s.stage, s.paper, ", ".join(f"{k}={v}" for k, v in s.defaults.items()))
    console.print(t)
