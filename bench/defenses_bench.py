"""Inference-time defenses on one base model and one set of points: clean cost, overhead, and robustness
under a naive (non-adaptive) attack versus bastion's adaptive evaluation (issue 7).

    python bench/defenses_bench.py --n 100 --n-diffpure 32 --eps 0.3 --eot 5 --out bench/results/defenses.json
    python bench/defenses_bench.py --n 100 --norm l2 --eps 2.0 --only none,bit-depth,feature-squeezing-detector \
        --out bench/results/defenses_l2.json

Per defense: clean accuracy (rejections count as errors), false-rejection rate, inference latency multiple
(median of repeated timings vs the bare model), robust accuracy under PGD-CE (40 steps, no EOT/BPDA: what a
naive evaluation reports), robust accuracy under the adaptive `fast` suite (APGD-CE + APGD-T with the probe's
plan: EOT for randomness, BPDA for non-differentiable modules; for detectors also the detector-aware surrogate of
``bastion.defenses.inference.detectors``, and the adaptive figure is the lower of the two), and the gap.
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bastion.data import load_dataset
from bastion.defenses.inference import accuracy, build_defense, false_rejection_rate, train_distilled
from bastion.defenses.inference.base import median_latency
from bastion.defenses.inference.detectors import detector_aware_surrogate
from bastion.evaluation.adaptive import build_adaptation, probe
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.evaluation.suite import run_suite
from bastion.threat import LpThreat
from bastion.zoo import load_model


def configs(data: Any, distilled: torch.nn.Module | None) -> list[tuple[str, str, dict[str, Any]]]:
    val, train = data.val, data.train
    if distilled is None:  # rows that need the distilled model are skipped
        return [c for c in configs(data, torch.nn.Identity()) if "distill" not in c[0]]
    return [
        ("none", "", {}),
        ("bit-depth", "bit-depth", {}),
        ("median-filter", "median-filter", {}),
        ("non-local-means", "non-local-means", {}),
        ("jpeg", "jpeg", {}),
        ("spatial-smoothing", "spatial-smoothing", {}),
        ("thermometer", "thermometer", {}),
        ("random-resize-pad", "random-resize-pad", {}),
        ("gaussian-noise", "gaussian-noise", {}),
        ("feature-squeezing-detector", "feature-squeezing-detector", {"data": val}),
        ("feature-squeezing-detector (median only)", "feature-squeezing-detector", {"data": val, "bits": 0}),
        ("mahalanobis-detector", "mahalanobis-detector", {"data": train}),
        ("distillation (T=100)", "", {}),
        ("ensemble-average (cnn + distilled)", "ensemble-average", {"members": [distilled]}),
        ("ensemble-vote (cnn + distilled + jpeg view)", "ensemble-vote",
         {"members": [distilled, build_defense("jpeg", distilled)]}),
        ("random-ensemble", "random-ensemble", {}),
        ("dynamic-ensemble", "dynamic-ensemble", {"data": train, "train_points": 500, "epochs": 3}),
        ("pipeline: fs-detector > median", "pipeline",
         {"data": val, "steps": [{"defense": "feature-squeezing-detector"}, {"defense": "median-filter"}]}),
        ("diffpure (t*=0.3, DDIM-5)", "diffpure", {"t_star": 0.3}),
    ]


def bench_one(defended: torch.nn.Module, base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: LpThreat,
              eot: int, seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"clean": accuracy(defended, x, y), "false_rejections": false_rejection_rate(defended, x)}
    row["latency_x"] = median_latency(defended, x) / median_latency(base, x)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    row["pgd_ce"] = run_attack(defended, x, y, threat, "pgd", steps=40, generator=gen).robust_accuracy
    plan, flags = probe(defended, x[:64], y[:64], threat, eot_samples=eot)
    row["flags"] = [f.name for f in flags if f.fired]
    row["plan"] = {k: v for k, v in plan.items() if v}
    out = run_suite(defended, x, y, threat, version="fast", adapt=build_adaptation(defended, plan),
                    generator=torch.Generator().manual_seed(seed))
    row["adaptive"] = float(out.robust.float().mean())
    surrogate = detector_aware_surrogate(defended)
    if surrogate is not None:  # the detector-aware attack (He et al. 2017 / Carlini & Wagner 2017)
        aware = run_suite(defended, x, y, threat, version="fast", adapt=Adaptation(surrogate=surrogate),
                          generator=torch.Generator().manual_seed(seed))
        row["detector_aware"] = float(aware.robust.float().mean())
        row["adaptive_plan_only"] = row["adaptive"]
        row["adaptive"] = min(row["adaptive"], row["detector_aware"])
    row["gap"] = row["pgd_ce"] - row["adaptive"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--n-diffpure", type=int, default=32)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eot", type=int, default=5, help="EOT draws per gradient for randomized defenses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    p.add_argument("--out", default="bench/results/defenses.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    base, _ = load_model("mnist-cnn")
    data = load_dataset("mnist", seed=a.seed)
    x, y = data.test.x[:a.n], data.test.y[:a.n]
    threat = LpThreat(a.norm, a.eps)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    t0 = time.perf_counter()
    distilled = None
    if not only or any(o.startswith(("distill", "ensemble-a", "ensemble-v")) for o in only):
        distilled = train_distilled(base, data.train.x[:5000], data.train.y[:5000], temperature=100.0, epochs=3,
                                    lr=2e-3, generator=torch.Generator().manual_seed(a.seed))
    distill_seconds = round(time.perf_counter() - t0, 1)
    results: list[dict[str, Any]] = []
    for label, name, params in configs(data, distilled):
        if only and not any(label.startswith(o) for o in only):
            continue
        t = time.perf_counter()
        if label.startswith("distillation"):
            defended, build_s = distilled, distill_seconds
        elif not name:
            defended, build_s = base, 0.0
        else:
            defended = build_defense(name, base, **params)
            build_s = round(time.perf_counter() - t, 1)
        n = a.n_diffpure if name == "diffpure" else a.n
        row = {"defense": label, "n": n, "build_seconds": build_s,
               **bench_one(defended, base, x[:n], y[:n], threat, a.eot, a.seed)}
        results.append(row)
        print(json.dumps(row), flush=True)
        Path(a.out).write_text(json.dumps({"args": vars(a), "rows": results}, indent=1) + "\n")
    print("| defense | n | clean | false rej. | latency x | PGD-CE (naive) | adaptive | gap | flags fired |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['defense']} | {r['n']} | {100 * r['clean']:.0f}% | {100 * r['false_rejections']:.0f}% | "
              f"{r['latency_x']:.1f} | {100 * r['pgd_ce']:.0f}% | {100 * r['adaptive']:.0f}% | "
              f"{100 * r['gap']:.0f} | {', '.join(r['flags']) or '-'} |")


if __name__ == "__main__":
    main()
