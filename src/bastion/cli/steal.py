"""`bastion steal`: model extraction attacks against output defenses and detectors (issue 22)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from bastion.cli.common import STORE, console, friendly, progress_bar

steal_app = typer.Typer(help="Model stealing: extraction attacks, output defenses, detectors, scored together.",
                        no_args_is_help=True)


@steal_app.command("run")
@friendly
def run_cmd(
    config: str = typer.Argument("mnist", help="stealing YAML file, or a built-in preset: mnist, mnist-full"),
    quick: bool = typer.Option(False, "--quick", help="the preset's quick variant (a few minutes on 2 CPU cores)"),
    victim: str | None = typer.Option(None, help="the victim instead of the config's: a zoo model or a user model "
                                                 "(file.py:attr, package.module:attr, a TorchScript file)"),
    weights: str | None = typer.Option(None, help="the user model's weights (.safetensors or a tensors-only .pt)"),
    target: str | None = typer.Option(None, help="the URL of a deployed model to steal (its server runs its own "
                                                 "defense; the config's defenses must be `none`)"),
    budget: int | None = typer.Option(None, help="the thief's query budget instead of the config's"),
    api_key: str | None = typer.Option(None, envvar="BASTION_API_KEY", show_default=False,
                                       help="API key for --target, sent as the X-API-Key header (never stored)"),
    store: str | None = STORE,
    workdir: Path | None = typer.Option(None, help="where transcripts and copies are kept (default: in the store's "
                                                   "home, steal/)"),
    out: Path | None = typer.Option(None, help="report folder (default: the work folder's NAME/report)"),
) -> None:
    """Steal the victim with every attack against every output defense, score the copies at every checkpoint of the
    budget, craft transfer attacks on them, and run every detector on the thief's and honest users' queries.
    Finished cells are reused and a stopped cell replays its recorded answers, so a killed run resumes."""
    from bastion.stealing.config import load_steal, parse_steal
    from bastion.stealing.run import Event, run_steal
    from bastion.stealing.table import write_outputs
    from bastion.store import Store

    if api_key:  # read by the HTTP client from the environment, so it never enters the run's config or record
        os.environ["BASTION_API_KEY"] = api_key
    cfg = load_steal(config, quick=quick)
    changes = {k: v for k, v in (("victim", victim), ("weights", weights), ("target", target),
                                 ("budget", budget)) if v is not None}
    if changes:
        data = {**cfg.model_dump(mode="json"), **changes}
        if budget is not None:
            data["checkpoints"] = [c for c in data["checkpoints"] if c <= budget]
        if target is not None:
            data["defenses"] = [{"name": "none"}]
        cfg = parse_steal(data, config)
    st = Store(store)
    root = workdir or st.home / "steal"
    started = time.perf_counter()
    console.print(f"[bold]{cfg.name}[/]: {len(cfg.attacks)} attacks x {len(cfg.defenses)} defenses, "
                  f"{len(cfg.detectors)} detectors, budget {cfg.budget}; victim {cfg.target or cfg.victim}; "
                  f"work folder {root}")
    with progress_bar() as bar:
        total = len(cfg.defenses) + len(cfg.detectors) + len(cfg.attacks) * len(cfg.defenses)
        task = bar.add_task("steal", total=total, info="")

        def tick(e: Event) -> None:
            bar.advance(task)
            bar.update(task, info=f"{e.phase} {e.name}" + (" (reused)" if e.skipped else ""))

        result = run_steal(cfg, st, root, on_event=tick)
    paths = write_outputs(st, result.run_id, out or root / cfg.name / "report")
    _print(st.get_run(result.run_id).summary or {})
    console.print(f"steal run {result.run_id} in {time.perf_counter() - started:.0f} s; report: {paths['html']}")


def _print(summary: dict) -> None:
    from rich.table import Table

    from bastion.stealing.table import detection, three_way

    for title, (headers, rows) in (("the copy, the honest users, the transfer", three_way(summary)),
                                   ("detection", detection(summary))):
        if rows:
            table = Table(*headers, title=title)
            for r in rows:
                table.add_row(*r)
            console.print(table)


@steal_app.command("list")
def list_cmd() -> None:
    """The extraction attacks, output defenses and detectors, with their papers and default parameters."""
    from rich.table import Table

    from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, STEAL_ATTACKS, load_algorithms

    load_algorithms()
    for title, registry, extra in (("extraction attacks", STEAL_ATTACKS, "access"),
                                   ("output defenses", OUTPUT_DEFENSES, "answers"),
                                   ("detectors", DETECTORS, None)):
        t = Table("name", *([extra] if extra else []), "paper", "defaults", title=title)
        for name in registry:
            s = registry.get(name)
            t.add_row(name, *([getattr(s, extra)] if extra else []), s.paper,
                      ", ".join(f"{k}={v}" for k, v in s.defaults.items()))
        console.print(t)
