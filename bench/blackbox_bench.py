"""Black-box attack bench (issue 4): Square against torchattacks' and ART's Square, and HopSkipJump against C&W.

    .venv-bench/bin/python bench/blackbox_bench.py [--models digits-std,digits-pgdat] [--points 500]
        [--hsj-points 500] [--reps 1] [--out bench/results/blackbox.json]

Square: L-inf at the model's eps, 5,000 queries, p_init 0.8, one restart, margin loss, for every library;
robust accuracy (re-checked like bastion's runner does), wall time, queries per point (bastion per sample:
``query_curve``; peers: total model rows / points, counted by a wrapper). HopSkipJump (L2, bastion's defaults:
64 iterations, at most 25,000 queries per point) against bastion's C&W-L2 (9 binary-search steps x
``--cw-iters`` iterations) on the same points: median L2 norm (inf for failures) and the ratio.
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
from bastion.blackbox.metrics import queries_to_success, query_curve
from bastion.evaluate.runner import run_attack
from bastion.threat import LpThreat

common.setup()

import torchattacks as ta  # noqa: E402
from art.attacks.evasion import SquareAttack  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

SQUARE_Q = 5000


def square_rows(model: nn.Module, name: str, x: Tensor, y: Tensor, n_total: int, eps: float, reps: int,
                skip: set[str]) -> dict[str, Any]:
    threat = LpThreat("linf", eps)
    n = x.shape[0]
    counter = common.RowCounter(model).eval()
    curve: dict[str, Any] = {}

    def run_bastion() -> dict[str, Any]:
        res = run_attack(model, x, y, threat, "square", generator=torch.Generator().manual_seed(0),
                         max_queries=SQUARE_Q, p_init=0.8)
        q = queries_to_success(res.counts.forward, res.success)
        c = query_curve(q, SQUARE_Q, points=51)
        at = {int(b): round(float(s), 4) for b, s in zip(c.queries.tolist(), c.success_rate.tolist(), strict=False)
              if int(b) in (100, 200, 500, 1000, 2000, 5000)}
        curve.update(median_queries_broken=c.median_queries, mean_queries_broken=c.mean_queries,
                     success_rate_at=at, curve_queries=c.queries.tolist(),
                     curve_success_rate=[round(v, 4) for v in c.success_rate.tolist()])
        return {"robust_accuracy": round(int(res.robust.sum()) / n_total, 4),
                "queries_per_point": round(res.counts.total_forward / n, 1),
                "attack_seconds": round(res.seconds, 3)}

    def peer(make):
        def run() -> dict[str, Any]:
            counter.reset()
            torch.manual_seed(0)
            adv = torch.as_tensor(make()).float().reshape(x.shape)
            robust = common.recheck_budget(model, adv, x, y, threat)
            return {"robust_accuracy": round(int(robust.sum()) / n_total, 4),
                    "queries_per_point": round(counter.fwd / n, 1)}
        return run

    runners = {"bastion": run_bastion}
    if "torchattacks" not in skip:
        runners["torchattacks"] = peer(lambda: ta.Square(counter, norm="Linf", eps=eps, n_queries=SQUARE_Q,
                                                         n_restarts=1, p_init=0.8, loss="margin", seed=0)(x, y))
    if "art" not in skip:
        def art() -> Any:
            clf = PyTorchClassifier(model=counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
            return SquareAttack(clf, norm=math.inf, max_iter=SQUARE_Q, eps=eps, p_init=0.8, nb_restarts=1,
                                batch_size=n, verbose=False).generate(x.numpy(), y.numpy())
        runners["art"] = peer(art)
    print(f"  {name} square linf eps={eps} (attacked {n}/{n_total})", flush=True)
    res = common.interleave(runners, reps)
    res["bastion"]["query_curve"] = curve
    peer_t = {k: v["seconds_median"] for k, v in res.items() if k != "bastion" and "error" not in v}
    fastest = min(peer_t, key=peer_t.get) if peer_t else None
    strongest = min((v["robust_accuracy"] for k, v in res.items() if k != "bastion" and "error" not in v),
                    default=None)
    return {"model": name, "attack": "square", "norm": "linf", "eps": eps, "queries": SQUARE_Q, "points": n_total,
            "attacked": n, "results": res, "fastest_peer": fastest,
            "time_vs_fastest_peer": round(res["bastion"]["seconds_median"] / peer_t[fastest], 3) if fastest else None,
            "strongest_peer_robust_accuracy": strongest}


def hsj_rows(model: nn.Module, name: str, x: Tensor, y: Tensor, eps: float, cw_iters: int) -> dict[str, Any]:
    threat = LpThreat("l2", eps)
    n = x.shape[0]
    print(f"  {name} hopskipjump vs cw, l2 ({n} points)", flush=True)
    t = time.perf_counter()
    hsj = run_attack(model, x, y, threat, "hopskipjump", generator=torch.Generator().manual_seed(0))
    t_h = time.perf_counter() - t
    t = time.perf_counter()
    cw = run_attack(model, x, y, threat, "cw", binary_search_steps=9, max_iterations=cw_iters)
    t_c = time.perf_counter() - t
    mh, mc = common.median_finite(hsj.norm), common.median_finite(cw.norm)
    both = torch.isfinite(hsj.norm) & torch.isfinite(cw.norm)
    per_point = (hsj.norm[both] / cw.norm[both].clamp_min(1e-12))
    out = {"model": name, "points": n, "eps": eps,
           "hopskipjump": {"median_l2": mh, "success_rate": float(torch.isfinite(hsj.norm).float().mean()),
                           "queries_per_point_mean": hsj.counts.total_forward / n,
                           "queries_per_point_max": int(hsj.counts.forward.max()), "seconds": round(t_h, 2),
                           "settings": "bastion defaults: 64 iterations, max 25,000 queries, init_evals 100"},
           "cw": {"median_l2": mc, "success_rate": float(torch.isfinite(cw.norm).float().mean()),
                  "seconds": round(t_c, 2),
                  "settings": f"9 binary-search steps x {cw_iters} iterations, lr 0.01, c0 1e-3, abort early"},
           "median_ratio_hsj_over_cw": round(mh / mc, 4) if math.isfinite(mh) and mc > 0 else None,
           "per_point_ratio_median": round(float(per_point.median()), 4) if per_point.numel() else None}
    print(f"    hsj median {mh:.4f} ({t_h:.1f}s)  cw median {mc:.4f} ({t_c:.1f}s)  "
          f"ratio {out['median_ratio_hsj_over_cw']}",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-std,digits-pgdat")
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--hsj-points", type=int, default=500)
    ap.add_argument("--cw-iters", type=int, default=200)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--skip", default="")
    ap.add_argument("--no-hsj", action="store_true")
    ap.add_argument("--out", default=str(common.RESULTS / "blackbox.json"))
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    started = time.time()
    doc: dict[str, Any] = {"bench": "blackbox (issue 4)", "command": " ".join(sys.argv), "versions": common.versions(),
                           "machine": common.machine(), "square": [], "hopskipjump_vs_cw": []}
    for name, model in common.get_models(args.models.split(",")).items():
        ds = common.dataset_of(name)
        x, y = common.points(ds, args.points)
        correct = common.predict(model, x) == y
        xs, ys = x[correct], y[correct]
        doc["square"].append(square_rows(model, name, xs, ys, len(y), common.EPS[ds]["linf"], args.reps, skip))
        common.write_json(Path(args.out), doc)
        if not args.no_hsj:
            xh, yh = common.points(ds, args.hsj_points)
            ch = common.predict(model, xh) == yh
            doc["hopskipjump_vs_cw"].append(hsj_rows(model, name, xh[ch], yh[ch], common.EPS[ds]["l2"], args.cw_iters))
        doc["elapsed_seconds"] = round(time.time() - started, 1)
        common.write_json(Path(args.out), doc)
    print(f"done in {time.time() - started:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
