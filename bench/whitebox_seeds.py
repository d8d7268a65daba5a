"""Seed spread of randomized budget attacks (issue 3): is a 1-3 point gap between bastion and a peer a difference in
strength or in the random start?

    .venv-bench/bin/python bench/whitebox_seeds.py --rows digits-pgdat:apgd-t:linf,digits-pgdat:pgd:l2 --seeds 5
        [--points 500] [--out bench/results/whitebox_seeds.json]

Each row runs bastion and every peer of ``whitebox_bench.py`` that has the attack, at the same settings and on the
same points, once per seed (bastion: its ``torch.Generator``; peers: torch's global seed, and torchattacks' APGD its
``seed`` argument). Every output is re-checked the same way (projected onto the threat model, re-classified). The
table gives the robust accuracy's mean, standard deviation, min and max over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import common
import whitebox_bench as wb
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat


def run_row(model: torch.nn.Module, model_name: str, attack: str, norm: str, x: torch.Tensor, y: torch.Tensor,
            n_total: int, seeds: int) -> dict[str, Any]:
    eps = common.EPS[common.dataset_of(model_name)][norm]
    threat = LpThreat(norm, eps)
    counter = common.RowCounter(model).eval()
    name, hyper = wb.BASTION[attack]
    robust: dict[str, list[float]] = {"bastion": []}
    for seed in range(seeds):
        res = run_attack(model, x, y, threat, name, generator=torch.Generator().manual_seed(seed), **hyper)
        robust["bastion"].append(int(res.robust.sum()) / n_total)
        for lib, fn in wb.peers(attack, norm, eps, counter, x, y, seed=seed).items():
            if lib == "art":  # ART's PGD/APGD take minutes per call on these points; the main bench compares them
                continue
            torch.manual_seed(seed)
            adv = torch.as_tensor(fn()).detach().float().reshape(x.shape)
            robust.setdefault(lib, []).append(int(common.recheck_budget(model, adv, x, y, threat).sum()) / n_total)
        print(f"  {model_name} {attack} {norm} seed {seed}: "
              + ", ".join(f"{k} {v[-1]:.4f}" for k, v in robust.items()), flush=True)
    summary = {lib: {"mean": round(statistics.mean(v), 4), "sd": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0,
                     "min": min(v), "max": max(v), "per_seed": v} for lib, v in robust.items()}
    return {"model": model_name, "attack": attack, "norm": norm, "eps": eps, "settings": wb.SETTINGS[attack],
            "points": n_total, "attacked": x.shape[0], "seeds": seeds, "robust_accuracy": summary}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | attack | norm, eps | library | robust accuracy: mean (sd) | min - max | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for lib, v in r["robust_accuracy"].items():
            lines.append(f"| {r['model']} | {r['attack']} | {r['norm']}, {r['eps']} | {lib} | "
                         f"{100 * v['mean']:.2f}% ({100 * v['sd']:.2f}) | {100 * v['min']:.1f} - {100 * v['max']:.1f}% "
                         f"| {r['seeds']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="digits-pgdat:apgd-t:linf,digits-pgdat:pgd:l2",
                    help="model:attack:norm, comma separated")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--out", default=str(common.RESULTS / "whitebox_seeds.json"))
    args = ap.parse_args()
    specs = [tuple(r.split(":")) for r in args.rows.split(",") if r]
    models = common.get_models(sorted({m for m, _, _ in specs}))
    started, rows = time.time(), []
    for model_name, attack, norm in specs:
        model = models[model_name]
        x, y = common.points(common.dataset_of(model_name), args.points)
        correct = common.predict(model, x) == y
        rows.append(run_row(model, model_name, attack, norm, x[correct], y[correct], len(y), args.seeds))
        common.write_json(Path(args.out), {"bench": "whitebox seed spread (issue 3)", "command": " ".join(
            __import__("sys").argv), "versions": common.versions(), "machine": common.machine(), "rows": rows,
            "elapsed_seconds": round(time.time() - started, 1)})
    print(markdown(rows))
    print(f"done in {time.time() - started:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
