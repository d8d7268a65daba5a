"""Network intrusion detection: constraint-respecting attacks against unconstrained PGD, the genetic attack's speed
against the gradient attacks, and adversarially trained detectors against standard ones, on bastion's shipped
snapshot, in one run.

    PYTHONPATH=$PWD/src .venv/bin/python bench/ids_bench.py --out bench/results/ids.json
    PYTHONPATH=$PWD/src .venv/bin/python bench/ids_bench.py --table bench/results/ids.json   # Markdown for BENCHMARKS

One IDS evaluation (``bastion.ids.job.run_ids``, the code behind ``bastion ids evaluate``) with:

- detectors (binary: benign vs attack; the same split, epochs, batch size and learning rate): ``mlp`` (standard),
  ``mlp-khamis`` (adversarially trained as Khamis & Matrawy 2020 evaluate: unconstrained multi-step FGSM on the
  scaled vector, every attack row of every batch), ``mlp-capgd`` (adversarially trained with valid CAPGD flows for
  half of each batch's attack rows, as TabularBench's constrained Madry training), ``gbt`` (gradient-boosted trees;
  gradient attacks transfer from ``mlp``), ``mlp-gate`` (the standard MLP behind the constraint gate: a flow that
  cannot exist is an alarm);
- attacks: unconstrained ``pgd`` (40 steps on the min-max scaled vector, every feature free, the same L-inf ball;
  its flows are checked against the constraints like any other), ``cpgd``, ``capgd``, ``moeva2`` and ``caa`` at
  ``--generations`` (MoEvA2's population and offspring scaled as ``--population``), each on up to ``--per-class``
  test flows of every attack class that the detector catches.

Every number is the job's own stored summary: success (the detector calls the flow benign), validity (every
constraint holds), valid success (both), seconds and model passes. The speed ratio of the genetic attack is its
seconds per attacked flow over CAPGD's on the same detector and flows. The machine is a 2-core CPU shared with
other jobs; its load is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bastion.ids.config import parse_ids
from bastion.ids.job import run_ids
from bastion.store import Store


def config(args: argparse.Namespace) -> dict[str, Any]:
    genetic = {"generations": args.generations, "population": args.population, "offspring": args.population // 2}
    return {
        "name": "ids-bench", "data": "snapshot", "labels": "binary", "seed": args.seed, "eps": args.eps,
        "norm": "linf", "per_class": args.per_class, "training": {"epochs": args.epochs},
        "detectors": [
            {"name": "mlp"},
            {"name": "mlp", "label": "mlp-khamis", "adversarial": {"method": "khamis"}},
            {"name": "mlp", "label": "mlp-capgd", "adversarial": {"method": "capgd"}},
            {"name": "gbt"},
            {"name": "mlp", "label": "mlp-gate", "defense": "constraint_gate"},
        ],
        "attacks": [{"name": "pgd"}, {"name": "cpgd"}, {"name": "capgd"},
                    {"name": "moeva2", "params": genetic}, {"name": "caa", "params": genetic}],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    load = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ids-bench-") as tmp:
        store = Store(Path(tmp) / "s.sqlite")
        cfg = parse_ids(config(args))
        run_id = run_ids(cfg, store, Path(tmp) / "w", progress=lambda m: print(f"  {m}", flush=True))
        summary = store.get_run(run_id).summary or {}
        store.close()
    return {"command": " ".join(["python", *sys.argv]), "config": cfg.model_dump(mode="json"), "summary": summary,
            "seconds": time.perf_counter() - started, "load_start": load, "load_end": os.getloadavg(),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "torch": torch.__version__, "python": platform.python_version(), "threads": 1}}


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.1f}%"


def table(result: dict[str, Any]) -> str:
    s = result["summary"]
    cells = {(c["detector"], c["attack"]): c for c in s["cells"]}
    attacks = [a["label"] or a["name"] for a in result["config"]["attacks"]]
    base = s["detectors"]["mlp"]["train_seconds"]
    lines = ["| detector | clean detection | false positives | train s (x mlp) | " + " | ".join(
        f"{a}: valid success (success, valid)" for a in attacks) + " |", "|---" * (4 + len(attacks)) + "|"]
    for name, d in s["detectors"].items():
        row = [name, _pct(d["detection_rate"]), _pct(d["false_positive_rate"]),
               f"{d['train_seconds']:.1f} ({d['train_seconds'] / base:.1f}x)"]
        for a in attacks:
            c = cells[(name, a)]
            row.append(f"{_pct(c['valid_success_rate'])} ({_pct(c['success_rate'])}, {_pct(c['valid_rate'])})")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| detector | attack | attacked | seconds | s per flow | passes (fwd / grad) | x CAPGD's time |",
              "|---|---|---|---|---|---|---|"]
    for (det, att), c in cells.items():
        base = cells.get((det, "capgd"))
        per = c["seconds"] / max(c["attacked"], 1)
        ratio = per / (base["seconds"] / max(base["attacked"], 1)) if base and base["seconds"] > 0 else float("nan")
        lines.append(f"| {det} | {att} | {c['attacked']} | {c['seconds']:.1f} | {per:.3f} | "
                     f"{c['forward_passes']} / {c['backward_passes']} | {ratio:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/ids.json"))
    parser.add_argument("--table", type=Path, help="print the Markdown tables of a results file and stop")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(table(result))


if __name__ == "__main__":
    main()
