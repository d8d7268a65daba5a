"""`bastion data`: offline data sets."""

from __future__ import annotations

import typer
from rich.table import Table

from bastion.cli.common import console, friendly

data_app = typer.Typer(help="Offline data sets.", no_args_is_help=True)

@data_app.command("list")
@friendly
def data_list() -> None:
    """List the registered data sets."""
    from bastion.data import DATASETS

    table = Table("name", "modality", "shape", "classes", "bounds", "source")
    for name in DATASETS:
        s = DATASETS.get(name).spec
        table.add_row(name, s.modality, "x".join(map(str, s.shape)), str(s.num_classes), f"[{s.lower}, {s.upper}]",
                      s.source)
    console.print(table)


@data_app.command("show")
@friendly
def data_show(name: str, seed: int = typer.Option(0, help="seed of the train/val/test split")) -> None:
    """Load a data set and show its spec and split sizes."""
    from bastion.data import load_dataset

    d = load_dataset(name, seed=seed)
    s = d.spec
    table = Table(show_header=False)
    for key, value in [("name", s.name), ("modality", s.modality), ("description", s.description),
                       ("shape", "x".join(map(str, s.shape))), ("classes", ", ".join(s.classes)),
                       ("bounds", f"[{s.lower}, {s.upper}]"), ("source", s.source), ("licence", s.licence),
                       ("train / val / test", f"{len(d.train)} / {len(d.val)} / {len(d.test)} (seed {seed})")]:
        table.add_row(key, value)
    console.print(table)


