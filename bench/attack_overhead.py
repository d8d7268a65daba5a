"""Per-iteration overhead of bastion's gradient attacks (issue 3): attack time over the time of its own passes.

    .venv-bench/bin/python bench/attack_overhead.py [--models mnist-pgdat,digits-pgdat] [--points N] [--reps 12]
        [--attacks pgd,apgd] [--norms linf,l2] [--out bench/results/overhead.json]

Two ratios per rep, both with no bench hook inside the attack's backward passes (a Python tensor hook costs tens
of microseconds right after a pass on this CPU, which at this margin would be read as the attack's overhead):

- **replay**: the attack runs through the runner while ``CallLog`` records each forward call's batch size; then
  exactly those calls are replayed as bare forward+backward passes of the same model in a tight loop, on the
  attack's own outputs (perturbed points: a clean image passes faster, see ``replay``). The replay
  follows each rep, so both halves see nearly the same machine state, but on this VM the speed drifts by tens of
  percent over the seconds between them.
- **in place**: the attack's wall time over the summed time of its own passes, clocked as the attack makes them
  (``PassClock``: the attack's one-pass helper, ``x.requires_grad_()``, forward, loss and ``autograd.grad``, plus
  forward-only calls). Attack work and passes alternate every few milliseconds, so drift hits both sides alike;
  the spread across reps is a few tenths of a percent. It cannot see a pass slowed by the attack's own work
  (evicted caches); the replay can, so the two are read together.

The first rep (new batch shapes, allocations) is dropped. Reported: the median of the per-rep ratios and a 95%
bootstrap interval for that median (``common.median_ci``), and the replay's quartiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import common
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.threat import LpThreat

HYPER = {"pgd": {"steps": 40}, "apgd": {"loss": "ce", "n_iter": 100}}


def replay(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, calls: list[list[int]]) -> float:
    """Seconds for the recorded calls as bare passes: a forward of each call's rows, plus its backward passes.

    Give it perturbed points (the attack's own outputs): a pass's time depends on the data. On the max-pooling
    CNNs, clean images (mostly exact zeros) pass 4-11% faster than the same images perturbed within eps
    (mnist-std: 46.8 ms clean, 51.7 ms at the attack's outputs, 52.3 ms with uniform noise, for 100 images)."""
    start = time.perf_counter()
    for rows, backward in calls:
        xx = x[:rows].clone().requires_grad_(backward > 0)
        out = model(xx)
        for _ in range(backward):
            torch.autograd.grad(F.cross_entropy(out, y[:rows], reduction="sum"), xx, retain_graph=True)
    return time.perf_counter() - start


class CallLog(torch.nn.Module):
    """Records the batch size of every forward call and whether it can be backpropagated, with no hook: PGD and APGD
    make exactly one backward pass per forward whose input requires grad, and none otherwise."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[list[int]] = []  # [rows, backward passes], as common.BatchLog

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append([x.shape[0], int(x.requires_grad and torch.is_grad_enabled())])
        return self.model(x)


class PassClock:
    """Times the attack's passes in place: wraps the one-pass helper that PGD (``losses.input_gradient``) and APGD
    (``apgd._evaluate``) call, and forward calls made outside it (PGD's last, gradient-free forward)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._inside = False
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> PassClock:
        import bastion.attacks.apgd as apgd_mod
        import bastion.attacks.pgd as pgd_mod

        for mod, name in ((apgd_mod, "_evaluate"), (pgd_mod, "input_gradient")):
            fn = getattr(mod, name)
            self._saved.append((mod, name, fn))
            setattr(mod, name, self._timed(fn))
        return self

    def __exit__(self, *exc: object) -> None:
        for mod, name, fn in self._saved:
            setattr(mod, name, fn)
        self._saved.clear()

    def _timed(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._inside = True
            try:
                return fn(*args, **kwargs)
            finally:
                self._inside = False
                self.seconds += time.perf_counter() - start

        return timed

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model, with forward calls outside the helper timed too."""
        clock = self

        class Timed(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                if clock._inside:
                    return self.model(x)
                start = time.perf_counter()
                out = self.model(x)
                clock.seconds += time.perf_counter() - start
                return out

        return Timed()


def logged_run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: LpThreat,
               attack: str) -> tuple[float, list[list[int]], float, torch.Tensor, torch.Tensor]:
    """The runner's attack time, the forward calls the attack made, the seconds spent in those passes, and the
    attacked points' outputs with their labels (for the replay)."""
    logs: list[CallLog] = []
    clock = PassClock()

    def log(m: torch.nn.Module) -> torch.nn.Module:
        logs.append(CallLog(m))
        return clock.wrap(logs[-1])

    with clock:
        res = run_attack(model, x, y, threat, attack, generator=torch.Generator().manual_seed(0),
                         adapt=Adaptation(wrap=log), **HYPER[attack])
    attacked = res.clean_correct
    return res.seconds, logs[0].calls, clock.seconds, res.adversarial[attacked], y[attacked]


def overhead(model: torch.nn.Module, model_name: str, x: torch.Tensor, y: torch.Tensor, attack: str, norm: str,
             reps: int) -> dict[str, float]:
    threat = LpThreat(norm, common.EPS[common.dataset_of(model_name)][norm])
    ratios, inside, gap = [], [], []
    for rep in range(reps):
        seconds, calls, model_seconds, x_adv, y_adv = logged_run(model, x, y, threat, attack)
        bare = replay(model, x_adv, y_adv, calls)
        if rep:
            ratios.append(seconds / bare)
            inside.append(seconds / model_seconds)
            gap.append(model_seconds / bare)  # above 1: the passes ran slower inside the attack (or drift)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    lo, hi = common.median_ci(ratios)
    in_lo, in_hi = common.median_ci(inside)
    return {"median": statistics.median(ratios), "ci_low": lo, "ci_high": hi, "q1": q[0], "q3": q[2],
            "reps": len(ratios), "ratios": ratios, "inside_median": statistics.median(inside),
            "inside_ci_low": in_lo, "inside_ci_high": in_hi, "inside": inside,
            "gap_median": statistics.median(gap), "gap_ci": common.median_ci(gap)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mnist-pgdat", help="comma list (bench/common.py names)")
    ap.add_argument("--points", type=int, default=None, help="default: 500 on digits, 100 on MNIST")
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--attacks", default="pgd,apgd")
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--out", default=None, help="JSON file for the per-rep ratios")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        model = common.get_models([name])[name]
        dataset = common.dataset_of(name)
        x, y = common.points(dataset, args.points or (500 if dataset == "digits" else 100))
        for attack in args.attacks.split(","):
            for norm in args.norms.split(","):
                r = overhead(model, name, x, y, attack, norm, args.reps)
                rows.append({"model": name, "points": x.shape[0], "attack": attack, "norm": norm, **r})
                print(f"{name} {attack} {norm}: attack time / its passes timed in place = {r['inside_median']:.3f} "
                      f"(95% interval {r['inside_ci_low']:.3f}-{r['inside_ci_high']:.3f}); / its passes replayed = "
                      f"{r['median']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f}); passes in place / replayed = "
                      f"{r['gap_median']:.3f} ({r['gap_ci'][0]:.3f}-{r['gap_ci'][1]:.3f}); {r['reps']} reps",
                      flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "torch": torch.__version__, "rows": rows}, f, indent=1)
