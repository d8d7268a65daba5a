"""Adversarial-training benchmark (issue 6; not run in CI). Results go to docs/BENCHMARKS.md.

Subcommands (run from the repository root with the venv active; one torch thread each):

  train RECIPE OUT          = ``bastion adv-train --recipe RECIPE --out OUT`` (checkpoint + curves + costs)
  eval CKPT... --eps E      clean and robust accuracy by APGD-CE then APGD-T (3 targets, 100 iterations each;
                            a point is robust only if both fail), on the first --n test points
  costs --dataset mnist     CPU seconds per batch of 128 for standard training and every method
                            (their ratio is the cost multiple of standard training)
  schedules                 automatic vs fixed schedule: PGD-AT on digits at eps 0.2, same epochs, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bastion.data import load_dataset
from bastion.defenses.training import METHODS, Recipe, StepContext, adversarial_train, load_recipe
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat
from bastion.zoo import build_model, load_model
from bastion.zoo.train import init_model


def evaluate(path: str, eps: float, n: int, seed: int = 0) -> dict:
    model, meta = load_model(path)
    test = load_dataset(meta.dataset).test
    x, y = test.x[:n], test.y[:n]
    threat = LpThreat("linf", eps)
    start = time.perf_counter()
    ce = run_attack(model, x, y, threat, "apgd", loss="ce", n_iter=100, generator=torch.Generator().manual_seed(seed))
    robust = ce.robust.clone()
    left = robust.nonzero().flatten()
    if left.numel():
        t = run_attack(model, x[left], y[left], threat, "apgd-t", n_iter=100, n_target_classes=3,
                       generator=torch.Generator().manual_seed(seed))
        robust[left] = t.robust
    cost = meta.metrics.get("cost", {})
    return {"checkpoint": path, "dataset": meta.dataset, "method": meta.recipe.get("defense", "standard"),
            "eps": eps, "n": n, "clean": ce.clean_accuracy, "apgd_ce": ce.robust_accuracy,
            "apgd_ce_t": float(robust.float().mean()), "train_seconds": cost.get("train_seconds"),
            "train_cpu_seconds": cost.get("train_cpu_seconds"),
            "passes_multiple": cost.get("multiple_of_standard_training"),
            "epochs": len(meta.metrics.get("val_curve", {}).get("epoch", [])), "stopped": meta.metrics.get("stopped"),
            "eval_seconds": round(time.perf_counter() - start, 1)}


def _standard_step(model, opt, x, y, threat, ctx):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def costs(dataset: str, eps: float, batches: int = 8) -> dict[str, float]:
    """CPU seconds per batch of 128 (process time, one thread), default hyperparameters of each method."""
    data = load_dataset(dataset)
    out = {}
    for name, step in [("standard", _standard_step)] + [(m, METHODS.get(m).step) for m in METHODS.names()]:
        model = init_model(lambda: build_model("cnn", data.spec.shape, data.spec.num_classes), 0)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        threat = LpThreat("linf", eps)
        for b in range(batches + 1):
            if b == 1:
                cpu = time.process_time()
            x, y = data.train.x[b * 128:(b + 1) * 128], data.train.y[b * 128:(b + 1) * 128]
            step(model, opt, x, y, threat, StepContext(seed=b))
        out[name] = (time.process_time() - cpu) / batches
    return out


def schedules(seeds: int = 3, epochs: int = 6) -> list[dict]:
    rows = []
    for schedule in ("fixed", "auto"):
        for seed in range(seeds):
            r = Recipe(defense="pgd-at", dataset="digits", eps=0.2, epochs=epochs, lr=3e-3, schedule=schedule,
                       val_size=200, test_size=359, seed=seed, method={"steps": 10})
            out = Path("runs/bench/schedules") / f"{schedule}-{seed}"
            _, meta = adversarial_train(r, out, resume=False)
            m = meta.metrics
            rows.append({"schedule": schedule, "seed": seed, "clean": m["test_accuracy"],
                         "pgd20": m["test_robust_accuracy_pgd20"],
                         "passes_multiple": m["cost"]["multiple_of_standard_training"],
                         "cpu_seconds": m["cost"]["train_cpu_seconds"]})
            print(json.dumps(rows[-1]), flush=True)
    for schedule in ("fixed", "auto"):
        sel = [r for r in rows if r["schedule"] == schedule]
        print(schedule, "mean PGD-20", round(statistics.mean(r["pgd20"] for r in sel), 4),
              "clean", round(statistics.mean(r["clean"] for r in sel), 4),
              "passes x", round(statistics.mean(r["passes_multiple"] for r in sel), 2))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("recipe")
    t.add_argument("out")
    e = sub.add_parser("eval")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--eps", type=float, required=True)
    e.add_argument("--n", type=int, default=1000)
    c = sub.add_parser("costs")
    c.add_argument("--dataset", default="mnist")
    c.add_argument("--eps", type=float, default=0.3)
    sub.add_parser("schedules")
    a = p.parse_args()
    if a.cmd == "train":
        _, meta = adversarial_train(load_recipe(a.recipe), a.out)
        print(json.dumps(meta.metrics, default=str))
    elif a.cmd == "eval":
        for ck in a.checkpoints:
            print(json.dumps(evaluate(ck, a.eps, a.n)), flush=True)
    elif a.cmd == "costs":
        res = costs(a.dataset, a.eps)
        print(json.dumps({k: {"cpu_s_per_batch": round(v, 4), "multiple": round(v / res["standard"], 2)}
                          for k, v in res.items()}))
    else:
        schedules()


if __name__ == "__main__":
    main()
