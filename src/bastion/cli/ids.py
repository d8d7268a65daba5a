"""`bastion ids`: network intrusion detection (issue 23): generate labelled traffic."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from bastion.cli.common import console, friendly, progress_bar

ids_app = typer.Typer(help="Network intrusion detection: labelled traffic, detectors, constrained attacks.",
                      no_args_is_help=True)


@ids_app.command("generate")
@friendly
def generate_cmd(
    out: Path = typer.Option(..., "--out", help="folder for capture.pcap, flows.csv.gz, card.json and CARD.md"),
    seed: int = typer.Option(0, "--seed", help="seed of the benign clients' timing and the attacks' schedule"),
    minutes: float = typer.Option(3.0, "--minutes", help="minutes of traffic (0.1 to 60)"),
    clients: int = typer.Option(6, "--clients", help="benign client namespaces"),
) -> None:
    """Generate labelled traffic on a virtual network of Linux network namespaces (real services, seeded benign
    clients, bounded nmap/hping3/hydra/slowhttptest and web attacks), capture it and meter it into CIC-IDS2017
    flows. Needs root (or CAP_NET_ADMIN); the shipped snapshot needs nothing."""
    from bastion.ids.generate import generate

    started = time.perf_counter()
    command = (f"bastion ids generate --out {shlex.quote(str(out))} --seed {seed} --minutes {minutes} "
               f"--clients {clients}")
    with progress_bar() as bar:
        task = bar.add_task("generate", total=1.0, info="")

        def tick(phase: str, done: float, total: float) -> None:
            bar.update(task, completed=done / total if total else 0.0, info=phase)

        path = generate(out, seed=seed, minutes=minutes, clients=clients, command=command, on_progress=tick)
    console.print(f"flows: {path} (card: {path.parent / 'CARD.md'}) in {time.perf_counter() - started:.0f} s")
