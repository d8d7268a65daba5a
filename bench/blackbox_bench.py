"""Black-box attack bench (issue 4): Square against torchattacks' and ART's Square, and HopSkipJump against C&W.

    .venv-bench/bin/python bench/blackbox_bench.py [--models digits-std,digits-pgdat] [--norms linf,l2]
        [--points 500] [--art-points 100] [--art-timeout 900] [--skip art] [--no-hsj] [--hsj-points 500]
        [--reps 1] [--out bench/results/blackbox.json]
    .venv-bench/bin/python bench/blackbox_bench.py --render bench/results/blackbox_square_digits.json

Square: at the model's eps for each norm, 5,000 queries, p_init 0.8, one restart, margin loss, for every library;
robust accuracy (re-checked like bastion's runner does), wall time, queries per point (bastion per sample:
``query_curve``; peers: total model rows / points, counted by a wrapper) and the seconds spent inside the model's
forward (timed by the same wrapper, for every library), so wall minus model time is each library's own overhead.
bastion and torchattacks run on all ``--points``; ART's Square (slow: every iteration re-predicts every point) gets
its own row on the first ``--art-points`` of the same points, with bastion and torchattacks re-run on those, and is
stopped after ``--art-timeout`` seconds. HopSkipJump (L2, bastion's defaults: 64 iterations, at most 25,000
queries per point) against bastion's C&W-L2 (9 binary-search steps x ``--cw-iters`` iterations) on the same points:
median L2 norm (inf for failures) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import common
from bastion.blackbox.metrics import queries_to_success, query_curve
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat

common.setup()

import torchattacks as ta  # noqa: E402
from art.attacks.evasion import SquareAttack  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

SQUARE_Q = 5000


class TimedCounter(common.RowCounter):
    """``RowCounter`` that also adds up the seconds spent inside the wrapped model's forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.model_seconds = 0.0

    def reset(self) -> None:
        super().reset()
        self.model_seconds = 0.0

    def forward(self, x: Tensor) -> Tensor:
        t = time.perf_counter()
        out = super().forward(x)
        self.model_seconds += time.perf_counter() - t
        return out


class ArtTimeout(Exception):
    pass


def _alarm(seconds: int) -> None:
    def fire(signum: int, frame: Any) -> None:
        raise ArtTimeout(f"stopped after {seconds} s (--art-timeout)")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)


def _curve(forward: Tensor, success: Tensor) -> dict[str, Any]:
    c = query_curve(queries_to_success(forward, success), SQUARE_Q, points=51)
    at = {int(b): round(float(s), 4) for b, s in zip(c.queries.tolist(), c.success_rate.tolist(), strict=False)
          if int(b) in (100, 200, 500, 1000, 2000, 5000)}
    return {"median_queries_broken": c.median_queries, "mean_queries_broken": c.mean_queries,
            "success_rate_at": at, "curve_queries": c.queries.tolist(),
            "curve_success_rate": [round(v, 4) for v in c.success_rate.tolist()]}


def _bastion(counter: TimedCounter, x: Tensor, y: Tensor, threat: LpThreat, n_total: int) -> dict[str, Any]:
    counter.reset()
    res = run_attack(counter, x, y, threat, "square", generator=torch.Generator().manual_seed(0),
                     max_queries=SQUARE_Q, p_init=0.8)
    return {"robust_accuracy": round(int(res.robust.sum()) / n_total, 4),
            "queries_per_point": round(res.counts.total_forward / x.shape[0], 1),
            "attack_seconds": round(res.seconds, 3), "model_seconds": round(counter.model_seconds, 3),
            "query_curve": _curve(res.counts.forward, res.success)}


def _peer(counter: TimedCounter, make: Callable[[], Any], x: Tensor, y: Tensor, threat: LpThreat,
          n_total: int) -> dict[str, Any]:
    counter.reset()
    torch.manual_seed(0)
    np.random.seed(0)
    adv = torch.as_tensor(make()).float().reshape(x.shape)
    model_seconds = counter.model_seconds
    robust = common.recheck_budget(counter.model, adv, x, y, threat)
    return {"robust_accuracy": round(int(robust.sum()) / n_total, 4),
            "queries_per_point": round(counter.fwd / x.shape[0], 1), "model_seconds": round(model_seconds, 3)}


def _art(counter: TimedCounter, x: Tensor, y: Tensor, norm: str, eps: float, timeout: int) -> Any:
    clf = PyTorchClassifier(model=counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = SquareAttack(clf, norm=math.inf if norm == "linf" else 2, max_iter=SQUARE_Q, eps=eps, p_init=0.8,
                          nb_restarts=1, batch_size=x.shape[0], verbose=False)
    _alarm(timeout)
    try:
        return attack.generate(x.numpy(), y.numpy())
    finally:
        signal.alarm(0)


def square_rows(model: nn.Module, name: str, x: Tensor, y: Tensor, n_total: int, norm: str, eps: float,
                reps: int, libs: list[str], art_timeout: int) -> dict[str, Any]:
    threat = LpThreat(norm, eps)
    counter = TimedCounter(model).eval()
    ta_norm = {"linf": "Linf", "l2": "L2"}[norm]
    runners = {"bastion": lambda: _bastion(counter, x, y, threat, n_total)}
    if "torchattacks" in libs:
        runners["torchattacks"] = lambda: _peer(counter, lambda: ta.Square(
            counter, norm=ta_norm, eps=eps, n_queries=SQUARE_Q, n_restarts=1, p_init=0.8, loss="margin",
            seed=0)(x, y), x, y, threat, n_total)
    if "art" in libs:
        runners["art"] = lambda: _peer(counter, lambda: _art(counter, x, y, norm, eps, art_timeout), x, y, threat,
                                       n_total)
    print(f"  {name} square {norm} eps={eps} (attacked {x.shape[0]}/{n_total}): {', '.join(runners)}", flush=True)
    res = common.interleave(runners, reps)
    ok = {k: v for k, v in res.items() if k != "bastion" and "error" not in v}
    fastest = min(ok, key=lambda k: ok[k]["seconds_median"]) if ok else None
    ratio = round(res["bastion"]["seconds_median"] / ok[fastest]["seconds_median"], 3) if fastest else None
    strongest = min((v["robust_accuracy"] for v in ok.values()), default=None)
    return {"model": name, "attack": "square", "norm": norm, "eps": eps, "queries": SQUARE_Q, "points": n_total,
            "attacked": x.shape[0], "results": res, "fastest_peer": fastest, "time_vs_fastest_peer": ratio,
            "strongest_peer_robust_accuracy": strongest}


def square_model(model: nn.Module, name: str, args: argparse.Namespace, skip: set[str],
                 emit: Callable[[dict[str, Any]], None]) -> None:
    ds = common.dataset_of(name)
    for norm in args.norms.split(","):
        eps = common.EPS[ds][norm]
        peers = [lib for lib in ("torchattacks",) if lib not in skip]
        x, y = common.points(ds, args.points)
        keep = common.predict(model, x) == y
        emit(square_rows(model, name, x[keep], y[keep], len(y), norm, eps, args.reps, peers, args.art_timeout))
        if "art" not in skip and args.art_points > 0:
            x, y = common.points(ds, args.art_points)
            keep = common.predict(model, x) == y
            emit(square_rows(model, name, x[keep], y[keep], len(y), norm, eps, 1, [*peers, "art"], args.art_timeout))


def render_square(doc: dict[str, Any]) -> str:
    """Markdown table of the Square rows of one result file."""
    lines = ["| model | norm, eps | attacked/points | library | robust acc | queries per point (mean) | wall s | "
             "model forward s (last run) | wall - model s (last run) | bastion time / fastest peer | "
             "bastion median queries to success "
             "(broken points) | bastion success rate at 100 / 500 / 1000 / 5000 queries |", "|" + "---|" * 12]
    for r in doc["square"]:
        for lib, v in r["results"].items():
            head = f"| {r['model']} | {r['norm']}, {r['eps']} | {r['attacked']}/{r['points']} | {lib} | "
            if "error" in v:
                secs = common.fmt(v["seconds_median"], 1)
                lines.append(head + f"not finished: {v['error'][:60]} | | {secs} | | | | | |")
                continue
            wall, last = v["seconds_median"], v["times"][-1]
            extra = ["", "", ""]
            if lib == "bastion":
                at = v["query_curve"]["success_rate_at"]
                extra = [f"{common.fmt(r['time_vs_fastest_peer'], 2)} ({r['fastest_peer']})",
                         common.fmt(v["query_curve"]["median_queries_broken"], 0),
                         " / ".join(common.fmt(at.get(str(k), at.get(k)), 3) for k in (100, 500, 1000, 5000))]
            lines.append(head + f"{common.fmt(v['robust_accuracy'], 4)} | {v['queries_per_point']} | "
                         f"{common.fmt(wall, 1)} ({len(v['times'])}) | {common.fmt(v['model_seconds'], 1)} | "
                         f"{common.fmt(last - v['model_seconds'], 1)} | {' | '.join(extra)} |")
    return "\n".join(lines)


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
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--art-points", type=int, default=100)
    ap.add_argument("--art-timeout", type=int, default=900)
    ap.add_argument("--hsj-points", type=int, default=500)
    ap.add_argument("--cw-iters", type=int, default=200)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--skip", default="")
    ap.add_argument("--no-hsj", action="store_true")
    ap.add_argument("--out", default=str(common.RESULTS / "blackbox.json"))
    ap.add_argument("--render", nargs="*", help="print the Square table of these result files and exit")
    args = ap.parse_args()
    if args.render:
        for f in args.render:
            print(render_square(json.loads(Path(f).read_text())) + "\n")
        return
    skip = {s for s in args.skip.split(",") if s}
    started = time.time()
    doc: dict[str, Any] = {"bench": "blackbox (issue 4)", "command": " ".join(sys.argv), "versions": common.versions(),
                           "machine": common.machine(), "square": [], "hopskipjump_vs_cw": []}

    def emit(row: dict[str, Any]) -> None:
        doc["square"].append(row)
        doc["elapsed_seconds"] = round(time.time() - started, 1)
        common.write_json(Path(args.out), doc)

    for name, model in common.get_models(args.models.split(",")).items():
        ds = common.dataset_of(name)
        if "square" not in skip:
            square_model(model, name, args, skip, emit)
        if not args.no_hsj:
            xh, yh = common.points(ds, args.hsj_points)
            ch = common.predict(model, xh) == yh
            doc["hopskipjump_vs_cw"].append(hsj_rows(model, name, xh[ch], yh[ch], common.EPS[ds]["l2"], args.cw_iters))
        doc["elapsed_seconds"] = round(time.time() - started, 1)
        common.write_json(Path(args.out), doc)
    print(f"done in {time.time() - started:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
