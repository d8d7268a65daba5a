"""Per-iteration overhead of bastion's gradient attacks (issue 3): attack time over the time of its own passes.

    .venv-bench/bin/python bench/attack_overhead.py [--model mnist-pgdat] [--points 100] [--reps 12]
        [--attacks pgd,apgd] [--norms linf,l2]

Each rep runs the attack through the runner, records every forward call (batch size, backward passes) with
``common.BatchLog``, and then replays exactly those calls as bare forward+backward passes of the same model in a
tight loop. The ratio of the two times is the attack's overhead over the compute it needed: 1.0 means no cost
beyond the passes. The replay follows each rep, so both halves see the same machine state; the first rep (new
batch shapes, allocations) is dropped. Reported: the median of the per-rep ratios, a 95% bootstrap interval for
that median (``common.median_ci``), and the quartiles. On a shared VM whose speed drifts by tens of percent over
seconds, pairing each attack run with the replay right after it cancels most of the drift; more reps narrow the
interval.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import common
from bastion.evaluate.runner import Adaptation, run_attack
from bastion.threat import LpThreat

HYPER = {"pgd": {"steps": 40}, "apgd": {"loss": "ce", "n_iter": 100}}


def replay(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, calls: list[list[int]]) -> float:
    """Seconds for the recorded calls as bare passes: a forward of each call's rows, plus its backward passes."""
    start = time.perf_counter()
    for rows, backward in calls:
        xx = x[:rows].clone().requires_grad_(backward > 0)
        out = model(xx)
        for _ in range(backward):
            torch.autograd.grad(F.cross_entropy(out, y[:rows], reduction="sum"), xx, retain_graph=True)
    return time.perf_counter() - start


class TimedLog(common.BatchLog):
    """``BatchLog`` that also clocks the passes as the attack makes them: each forward call, and for a call that is
    backpropagated, the time from the end of its forward to the moment the gradient reaches its input (a hook
    on the input), which holds the loss and its backward as a bare timing loop would. Their sum is the compute
    the attack used, timed at the same moments as the attack's own work, so the VM's drift (tens of percent over
    seconds) hits both sides of the ratio alike. Valid for attacks that do nothing but compute the loss between
    a forward and its single backward, and whose input goes only through the model (PGD, APGD).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.model_seconds = 0.0
        self._forward_end = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            x.register_hook(self._end_backward)
        start = time.perf_counter()
        out = super().forward(x)
        self._forward_end = time.perf_counter()
        self.model_seconds += self._forward_end - start
        return out

    def _end_backward(self, grad: torch.Tensor) -> None:
        self.model_seconds += time.perf_counter() - self._forward_end


def logged_run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: LpThreat,
               attack: str) -> tuple[float, list[list[int]], float]:
    """The runner's attack time, the forward calls the attack made, and the seconds spent in those passes."""
    logs: list[TimedLog] = []

    def log(m: torch.nn.Module) -> torch.nn.Module:
        logs.append(TimedLog(m))
        return logs[-1]

    res = run_attack(model, x, y, threat, attack, generator=torch.Generator().manual_seed(0),
                     adapt=Adaptation(wrap=log), **HYPER[attack])
    return res.seconds, logs[0].calls, logs[0].model_seconds


def overhead(model: torch.nn.Module, model_name: str, x: torch.Tensor, y: torch.Tensor, attack: str, norm: str,
             reps: int) -> dict[str, float]:
    threat = LpThreat(norm, common.EPS[common.dataset_of(model_name)][norm])
    ratios, inside = [], []
    for rep in range(reps):
        seconds, calls, model_seconds = logged_run(model, x, y, threat, attack)
        bare = replay(model, x, y, calls)
        if rep:
            ratios.append(seconds / bare)
            inside.append(seconds / model_seconds)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    lo, hi = common.median_ci(ratios)
    in_lo, in_hi = common.median_ci(inside)
    return {"median": statistics.median(ratios), "ci_low": lo, "ci_high": hi, "q1": q[0], "q3": q[2],
            "reps": len(ratios), "ratios": ratios, "inside_median": statistics.median(inside),
            "inside_ci_low": in_lo, "inside_ci_high": in_hi, "inside": inside}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mnist-pgdat")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--attacks", default="pgd,apgd")
    ap.add_argument("--norms", default="linf,l2")
    args = ap.parse_args()
    model = common.get_models([args.model])[args.model]
    x, y = common.points(common.dataset_of(args.model), args.points)
    for attack in args.attacks.split(","):
        for norm in args.norms.split(","):
            r = overhead(model, args.model, x, y, attack, norm, args.reps)
            print(f"{args.model} {attack} {norm}: attack time / its passes replayed = {r['median']:.3f} "
                  f"(95% interval {r['ci_low']:.3f}-{r['ci_high']:.3f}; quartiles {r['q1']:.3f}-{r['q3']:.3f}, "
                  f"{r['reps']} reps); attack time / its passes timed in place = {r['inside_median']:.3f} "
                  f"(95% interval {r['inside_ci_low']:.3f}-{r['inside_ci_high']:.3f})", flush=True)
