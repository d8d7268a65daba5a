"""`bastion runs` and `bastion report`: the results store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Column, Table

from bastion.cli.common import STORE, console, friendly

runs_app = typer.Typer(help="The results store.", no_args_is_help=True)

@runs_app.command("list")
@friendly
def runs_list(limit: int = 20, store: str | None = STORE) -> None:
    """List recorded runs, newest first."""
    from bastion.store import Store

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
def runs_show(run_id: str, store: str | None = STORE) -> None:
    """Show one run's configuration, environment and summary as JSON."""
    from bastion.evaluation.report import report_dict
    from bastion.store import Store

    console.print_json(json.dumps(report_dict(Store(store).get_run(run_id))))


@friendly
def report(run_id: str, store: str | None = STORE,
           out: Path | None = typer.Option(None, help="folder for the reports (default: runs/RUN_ID beside a "
                                                      "SQLite store, else in $BASTION_HOME)")) -> None:
    """Render the JSON, Markdown and HTML reports of any stored run."""
    from bastion.evaluation.job import default_report_dir
    from bastion.evaluation.report import write_reports
    from bastion.store import Store

    st = Store(store)
    run = st.get_run(run_id)
    folder = out or default_report_dir(st, run.id)
    if run.kind == "certify":
        from bastion.certification.report import write_reports as write_certify_reports

        console.print("\n".join(map(str, write_certify_reports(run, folder))), soft_wrap=True)
        return
    paths = write_reports(run, folder, st)
    console.print("\n".join(str(p) for p in paths.values()), soft_wrap=True)


