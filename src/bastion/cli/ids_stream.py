"""`bastion ids stream`: score flows in real time as the meter finishes them (issue 23, item 5). The command joins
`bastion ids` (bastion.cli.ids)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from bastion.cli.common import console, friendly, progress_bar
from bastion.cli.ids import ids_app


def _detector(path: Path | None, seed: int) -> tuple[Any, tuple[str, ...]]:
    """A saved detector (checked to read bastion's CIC columns), or the default mlp trained on the snapshot."""
    from bastion.errors import InvalidInputError
    from bastion.ids.features import FEATURE_NAMES

    if path is not None:
        from bastion.ids.models.io import load_detector

        model, meta = load_detector(path)
        if meta.get("columns") and tuple(meta["columns"]) != FEATURE_NAMES:
            raise InvalidInputError(f"{path} reads other columns than the flow meter writes (bastion's CIC layout); "
                                    "train one on the snapshot or generated flows: bastion ids train --out PATH")
        return model, tuple(meta.get("classes") or ("BENIGN", "ATTACK"))
    from bastion.ids.config import parse_ids
    from bastion.ids.job import train_entry, world_of

    cfg = parse_ids({"labels": "binary", "seed": seed, "detectors": [{"name": "mlp"}], "training": {"epochs": 20},
                     "attacks": [{"name": "pgd"}]})
    world = world_of(cfg)
    with console.status(f"no --detector: training the default mlp on the snapshot ({len(world.train)} flows)"):
        return train_entry(cfg, cfg.detectors[0], world), world.labels


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _print(summary: dict[str, Any], out: Path) -> None:
    lat = summary["latency_ms"]
    console.print(f"{summary['flows']} flows scored in {summary['seconds']:.1f} s (ended: {summary['ended']}): "
                  f"{summary['flows_per_second']:.1f} flows/s over the run, scorer alone "
                  f"{summary['scorer_flows_per_second']:.0f} flows/s")
    console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items())))
    for kind, what in (("total", "meter -> verdict"), ("features", "meter -> feature row"),
                       ("verdict", "feature row -> verdict"), ("since_last_packet", "last packet -> verdict")):
        if lat[kind]["p50"] is not None:
            console.print(f"latency {what}: p50 {_ms(lat[kind]['p50'])}, p99 {_ms(lat[kind]['p99'])}")
    if summary["agreement_with_labels"] is not None:
        console.print(f"verdicts agreeing with ground truth (benign vs attack): "
                      f"{100 * summary['agreement_with_labels']:.1f}%")
    console.print(f"verdicts: {out}")


@ids_app.command("stream")
@friendly
def stream_cmd(
    detector: Path | None = typer.Option(None, "--detector", help="a detector saved by `bastion ids train` "
                                                                   "(default: train the mlp on the snapshot)"),
    pcap: Path | None = typer.Option(None, "--pcap", help="score a pcap file, metered offline (no root)"),
    replay: Path | None = typer.Option(None, "--replay", help="replay a pcap with tcpreplay into namespaces and "
                                                              "meter it live (root)"),
    live: bool = typer.Option(False, "--live", help="generate traffic with bastion's lab and score it live (root)"),
    seconds: float = typer.Option(30.0, "--seconds", help="--live: seconds of generated traffic"),
    speed: float | None = typer.Option(None, "--speed", help="--replay: a multiplier of the recorded pace "
                                                             "(default: top speed)"),
    idle: int = typer.Option(2, "--idle", help="live meter idle timeout in seconds (CIC-IDS2017 used 120)"),
    active: int = typer.Option(10, "--active", help="live meter active timeout in seconds"),
    max_flows: int | None = typer.Option(None, "--max-flows", help="stop after this many flows"),
    max_seconds: float = typer.Option(600.0, "--max-seconds", help="stop after this many seconds"),
    out: Path = typer.Option(Path("verdicts.ndjson"), "--out", help="NDJSON of the verdicts, one flow a line"),
    seed: int = typer.Option(0, "--seed", help="seed of the default detector's training and of --live traffic"),
    clients: int = typer.Option(3, "--clients", help="--live: benign client namespaces"),
) -> None:
    """Score flows as they are produced: each flow's features, verdict (class, score) and latencies go to an NDJSON
    file; prints the throughput and the latency p50/p99."""
    from bastion.errors import InvalidInputError
    from bastion.ids import streamnet
    from bastion.ids.stream import ndjson_sink, pcap_source, score_stream

    chosen = [name for name, on in (("--pcap", pcap), ("--replay", replay), ("--live", live)) if on]
    if len(chosen) != 1:
        raise InvalidInputError("give exactly one source: --pcap FILE, --replay FILE or --live")
    if replay is not None:
        streamnet.require_root("replaying a pcap", "score the file offline with --pcap")
    if live:
        streamnet.require_root("live scoring of generated traffic", "score a capture offline with --pcap")
    for path in (pcap, replay):
        if path is not None and not path.is_file():
            raise InvalidInputError(f"no pcap at {path}; give the path of a capture file")
    model, classes = _detector(detector, seed)
    if pcap is not None:
        source = pcap_source(pcap)
    elif replay is not None:
        source = streamnet.replay_source(replay, speed=speed, idle=idle, active=active)
    else:
        source = streamnet.live_source(seconds, seed=seed, clients=clients, idle=idle, active=active)
    started = time.perf_counter()
    with source as opened, out.open("w") as handle, progress_bar() as bar:
        flows, labels = opened if live else (opened, None)
        task = bar.add_task("stream", total=max_flows, info="")

        def tick(report: Any) -> None:
            bar.update(task, completed=report.flows, info=f"{report.flows / max(report.seconds, 1e-9):.0f} flows/s")

        report = score_stream(model, classes, flows, max_flows=max_flows, max_seconds=max_seconds, labels=labels,
                              sink=ndjson_sink(handle), on_progress=tick)
    _print(report.summary(), out)
    console.print(f"done in {time.perf_counter() - started:.0f} s")
