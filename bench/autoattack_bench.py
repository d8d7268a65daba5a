"""Standard evaluation vs AutoAttack (issue 5): bastion's ``standard`` (and ``fast``) suite against AutoAttack.

    .venv-bench/bin/python bench/autoattack_bench.py [--models digits-std,digits-pgdat] [--points 500]
        [--norms linf,l2] [--art] [--out bench/results/autoattack.json]

AutoAttack references, on the same points (only clean-correct points are attacked; accuracies are over all):

* ``aa100-torchattacks``: a faithful AutoAttack-standard cascade rebuilt from torchattacks' parts with the
  paper's settings: APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations, 9 targets, 1 restart), FAB-T
  (100 iterations, 9 targets), Square (5,000 queries, p_init 0.8); each part attacks only the points every
  earlier part failed on, and every part's output is re-checked (projected onto the threat, re-classified).
* ``torchattacks-AutoAttack``: torchattacks' own ``AutoAttack(version='standard')``, whose parts use 10 steps.
* ``art-AutoAttack`` (``--art``): ART's ``AutoAttack`` with its default attack list.

Single-threaded, one repetition per configuration, all in one process, alternating bastion and the references.
The acceptance target is on wall time (``time_ratio_vs_aa100``); the machine's 2 cores are shared, so each
evaluation's process CPU time is recorded too (``cpu_seconds``, ``cpu_time_ratio_vs_aa100``), which other jobs on
the machine disturb much less.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import common
from bastion.evaluation.suite import run_suite
from bastion.threat import LpThreat

common.setup()

import torchattacks as ta  # noqa: E402


def bastion_suite(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, version: str, n_total: int
                  ) -> dict[str, Any]:
    t, c = time.perf_counter(), time.process_time()
    out = run_suite(model, x, y, threat, version=version, generator=torch.Generator().manual_seed(0))
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    stages = []
    robust_so_far = out.clean_correct.clone()
    for s in out.stages:
        r = s.result
        k = max(int(s.attacked.sum()), 1)
        robust_so_far &= ~torch.zeros_like(robust_so_far).index_put_((s.attacked.nonzero().flatten(),), r.success)
        stages.append({"part": s.stage.part, "attack": s.stage.attack, "params": s.stage.params,
                       "attacked": int(s.attacked.sum()), "broken": int(r.success.sum()),
                       "seconds": round(s.seconds, 3),
                       "fwd_per_attacked_point": round(r.counts.total_forward / k, 1),
                       "bwd_per_attacked_point": round(r.counts.total_backward / k, 1),
                       "robust_accuracy_after": round(int(robust_so_far.sum()) / n_total, 4),
                       **({"canary": s.canary, "escalated": s.escalated} if s.canary else {})})
    return {"robust_accuracy": round(int(out.robust.sum()) / n_total, 4), "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2), "stages": stages}


def cascade(model: nn.Module, parts: list[tuple[str, Any]], x: Tensor, y: Tensor, threat: LpThreat,
            n_total: int) -> dict[str, Any]:
    counter = common.RowCounter(model).eval()
    remaining = torch.arange(x.shape[0])
    stages = []
    t0, c0 = time.perf_counter(), time.process_time()
    for name, make in parts:
        if remaining.numel() == 0:
            break
        counter.reset()
        torch.manual_seed(0)
        t = time.perf_counter()
        adv = make(counter)(x[remaining], y[remaining])
        still = common.recheck_budget(model, adv.detach(), x[remaining], y[remaining], threat)
        dt = time.perf_counter() - t
        k = remaining.numel()
        stages.append({"part": name, "attacked": k, "broken": int((~still).sum()), "seconds": round(dt, 3),
                       "fwd_per_attacked_point": round(counter.fwd / k, 1),
                       "bwd_per_attacked_point": round(counter.bwd / k, 1)})
        remaining = remaining[still]
        stages[-1]["robust_accuracy_after"] = round(remaining.numel() / n_total, 4)
    return {"robust_accuracy": round(remaining.numel() / n_total, 4), "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2), "stages": stages}


def aa100_parts(norm: str, eps: float) -> list[tuple[str, Any]]:
    tn = "Linf" if norm == "linf" else "L2"
    return [
        ("apgd-ce", lambda m: ta.APGD(m, norm=tn, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)),
        ("apgd-t", lambda m: ta.APGDT(m, norm=tn, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0)),
        ("fab-t", lambda m: ta.FAB(m, norm=tn, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10,
                                   seed=0)),
        ("square", lambda m: ta.Square(m, norm=tn, eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, seed=0)),
    ]


def art_autoattack(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, n_total: int) -> dict[str, Any]:
    from art.attacks.evasion import AutoAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    norm = math.inf if threat.norm == "linf" else 2
    eps = float(threat.eps)
    t = time.perf_counter()
    adv = AutoAttack(clf, norm=norm, eps=eps, eps_step=2 * eps, batch_size=x.shape[0]).generate(x.numpy(), y.numpy())
    still = common.recheck_budget(model, torch.from_numpy(adv), x, y, threat)
    return {"robust_accuracy": round(int(still.sum()) / n_total, 4), "seconds": round(time.perf_counter() - t, 2),
            "settings": "ART AutoAttack defaults (its own attack list) with eps_step 2*eps, batch = all points"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-std,digits-pgdat")
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--art", default="", help="model:norm pairs on which to run ART's AutoAttack too")
    ap.add_argument("--no-ta-aa", action="store_true")
    ap.add_argument("--out", default=str(common.RESULTS / "autoattack.json"))
    args = ap.parse_args()
    started = time.time()
    doc: dict[str, Any] = {"bench": "standard evaluation vs AutoAttack (issue 5)", "command": " ".join(sys.argv),
                           "versions": common.versions(), "machine": common.machine(), "rows": []}
    art_on = {s for s in args.art.split(",") if s}
    for name, model in common.get_models(args.models.split(",")).items():
        ds = common.dataset_of(name)
        x, y = common.points(ds, args.points)
        correct = common.predict(model, x) == y
        xs, ys, n_total = x[correct], y[correct], len(y)
        for norm in args.norms.split(","):
            eps = common.EPS[ds][norm]
            threat = LpThreat(norm, eps)
            print(f"{name} {norm} eps={eps}: clean {float(correct.float().mean()):.4f}", flush=True)
            row: dict[str, Any] = {"model": name, "norm": norm, "eps": eps, "points": n_total,
                                   "clean_accuracy": round(float(correct.float().mean()), 4)}
            row["bastion-standard"] = bastion_suite(model, xs, ys, threat, "standard", n_total)
            print(f"  bastion standard {row['bastion-standard']['robust_accuracy']} "
                  f"{row['bastion-standard']['seconds']}s", flush=True)
            row["aa100-torchattacks"] = cascade(model, aa100_parts(norm, eps), xs, ys, threat, n_total)
            print(f"  aa100 {row['aa100-torchattacks']['robust_accuracy']} {row['aa100-torchattacks']['seconds']}s",
                  flush=True)
            row["bastion-fast"] = bastion_suite(model, xs, ys, threat, "fast", n_total)
            print(f"  bastion fast {row['bastion-fast']['robust_accuracy']} {row['bastion-fast']['seconds']}s",
                  flush=True)
            if not args.no_ta_aa:
                tn = "Linf" if norm == "linf" else "L2"
                row["torchattacks-AutoAttack-10step"] = cascade(
                    model, [("AutoAttack(version='standard')",
                             lambda m, tn=tn, eps=eps: ta.AutoAttack(m, norm=tn, eps=eps, version="standard",
                                                                     n_classes=10, seed=0))],
                    xs, ys, threat, n_total)
                print(f"  ta AutoAttack {row['torchattacks-AutoAttack-10step']['robust_accuracy']} "
                      f"{row['torchattacks-AutoAttack-10step']['seconds']}s", flush=True)
            if f"{name}:{norm}" in art_on:
                try:
                    row["art-AutoAttack"] = art_autoattack(model, xs, ys, threat, n_total)
                except Exception as e:
                    row["art-AutoAttack"] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"  art AutoAttack {row['art-AutoAttack']}", flush=True)
            b, a = row["bastion-standard"], row["aa100-torchattacks"]
            row["gap_pp_vs_aa100"] = round(100 * (b["robust_accuracy"] - a["robust_accuracy"]), 2)
            row["time_ratio_vs_aa100"] = round(b["seconds"] / a["seconds"], 3)
            row["cpu_time_ratio_vs_aa100"] = round(b["cpu_seconds"] / a["cpu_seconds"], 3)
            row["meets_accuracy_target"] = row["gap_pp_vs_aa100"] <= 0.2
            row["meets_time_target"] = row["time_ratio_vs_aa100"] <= 0.25
            doc["rows"].append(row)
            doc["elapsed_seconds"] = round(time.time() - started, 1)
            common.write_json(Path(args.out), doc)
    print(f"done in {time.time() - started:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
