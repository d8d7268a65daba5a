"""Shared pieces of the side-by-side benchmarks (issues 3, 4 and 5): models, points, re-checking, timing.

Run the bench scripts with the bench venv (``.venv-bench/bin/python``), which holds the peer libraries
(torchattacks, ART, Foolbox, adv-lib) next to an editable bastion. Everything is single-threaded.

Models (trained ones are cached under ``bench/.cache/``, which is not committed):

* ``digits-std``   bastion's ``cnn`` on scikit-learn digits (1x8x8), trained normally (seed 0).
* ``digits-pgdat`` the same architecture, Madry PGD adversarial training (PGD-10, L-inf eps 0.2, random start).
* ``mnist-std``    the zoo's ``mnist-cnn``.
* ``mnist-pgdat``  ``src/bastion/zoo/weights/mnist-cnn-pgdat.safetensors`` when it exists (else skipped).

Points: digits uses the test split (359) followed by the validation split (144) of
``load_dataset("digits")`` (seed 0), the first 500 of those 503; the model never trained on them.
MNIST uses the first ``n`` test images.

Every peer's output is re-checked the same way bastion's runner re-checks bastion's: budget attacks are
projected onto the threat (ball, then box) and re-classified; minimum-norm attacks are clipped to the box,
re-classified, and their norm is measured.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.threat import LpThreat
from bastion.zoo import build_model, load_model
from bastion.zoo.train import TrainConfig, accuracy, init_model, train_classifier

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"

EPS = {"digits": {"linf": 0.2, "l2": 0.5}, "mnist": {"linf": 0.3, "l2": 2.0}}


def setup() -> None:
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set (a second bench module imported in the same process)
        torch.set_num_interop_threads(1)


def stub_adv_lib() -> None:
    """adv_lib.attacks imports torchvision and visdom (absent here); stub them before importing it."""
    for name in ("torchvision", "torchvision.models", "torchvision.transforms", "torchvision.transforms.functional",
                 "visdom"):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.Visdom = object  # type: ignore[attr-defined]
            sys.modules[name] = mod


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    import importlib.metadata as md

    for pkg in ("bastion", "torchattacks", "adversarial-robustness-toolbox", "foolbox", "adv-lib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def machine() -> dict[str, Any]:
    import os

    return {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_at_start": os.getloadavg(), "note": "2-core CPU shared with other jobs; timings noisy"}


# ----------------------------------------------------------------------------------------------- models


def _pgd_batch(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, gen: torch.Generator) -> Tensor:
    alpha = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def pgd_train(model: nn.Module, train, val, *, eps: float, steps: int = 10, epochs: int = 40, lr: float = 1e-3,
              batch_size: int = 128, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Madry et al. 2018 adversarial training: every batch replaced by its PGD-``steps`` adversarial version."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(train), generator=gen)
        for idx in perm.split(batch_size):
            x, y = train.x[idx], train.y[idx]
            model.eval()
            xa = _pgd_batch(model, x, y, eps, steps, gen)
            model.train()
            loss = F.cross_entropy(model(xa), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            model.eval()
            log(f"  pgd-at epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} clean val acc {accuracy(model, val):.3f}")
    model.eval()
    return {"method": "pgd-at", "eps": eps, "steps": steps, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "seed": seed, "seconds": round(time.perf_counter() - start, 1)}


def digits_model(kind: str, log: Callable[[str], None] = print) -> nn.Module:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"digits-{kind}.pt"
    data = load_dataset("digits", seed=0)
    model = init_model(lambda: build_model("cnn", data.spec.shape, data.spec.num_classes), 0)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log(f"training digits-{kind} (cached at {path}) ...")
    if kind == "std":
        train_classifier(model, data.train, data.val, TrainConfig(epochs=30, patience=5, seed=0))
    else:
        pgd_train(model, data.train, data.val, eps=0.2, steps=10, epochs=60, log=log)
    model.eval()
    torch.save(model.state_dict(), path)
    log(f"  digits-{kind}: clean test acc {accuracy(model, data.test):.3f}")
    return model


def get_models(which: list[str], log: Callable[[str], None] = print) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for name in which:
        if name == "digits-std":
            out[name] = digits_model("std", log)
        elif name == "digits-pgdat":
            out[name] = digits_model("pgdat", log)
        elif name == "mnist-std":
            out[name] = load_model("mnist-cnn")[0].eval()
        elif name == "mnist-pgdat":  # PGD-AT crown-cnn (docs/recipes/mnist-crown-pgd-at.yaml)
            out[name] = load_model("mnist-crown-pgdat")[0].eval()
        else:
            raise ValueError(name)
    for m in out.values():
        for p in m.parameters():
            p.requires_grad_(False)
    return out


def points(dataset: str, n: int) -> tuple[Tensor, Tensor]:
    data = load_dataset(dataset, seed=0)
    if dataset == "digits":
        x = torch.cat([data.test.x, data.val.x])[:n]
        y = torch.cat([data.test.y, data.val.y])[:n]
    else:
        x, y = data.test.x[:n], data.test.y[:n]
    return x.float().contiguous(), y.long()


def dataset_of(model_name: str) -> str:
    return model_name.split("-")[0]


# --------------------------------------------------------------------------------------- counting/recheck


class RowCounter(nn.Module):
    """Counts sample-rows through forward and backward (totals), for peers' pass counts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fwd = 0
        self.bwd = 0

    def reset(self) -> None:
        self.fwd = self.bwd = 0

    def forward(self, x: Tensor) -> Tensor:
        self.fwd += x.shape[0]
        out = self.model(x)
        if out.requires_grad:
            rows = x.shape[0]

            def hook(g: Tensor) -> None:
                self.bwd += rows

            out.register_hook(hook)
        return out


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)


def recheck_budget(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor, threat: LpThreat) -> Tensor:
    """Boolean (N,): still robust after projecting ``x_adv`` onto the threat and re-classifying."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).reshape(x.shape)
    proj = threat.project(x_adv, x)
    return predict(model, proj) == y


def recheck_minimal(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """Per-sample norm of the (box-clipped) adversarial example, inf where it is not adversarial."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).reshape(x.shape).clamp(0, 1)
    bad = torch.isnan(x_adv).flatten(1).any(1)
    x_adv = torch.where(bad.view(-1, *[1] * (x.dim() - 1)), x, x_adv)
    hit = predict(model, x_adv) != y
    p = {"l2": 2.0, "linf": math.inf, "l1": 1.0}[norm]
    n = (x_adv - x).flatten(1).norm(p=p, dim=1)
    return torch.where(hit & ~bad, n, torch.full_like(n, float("inf")))


def zero_placeholders(x_adv: Tensor, x: Tensor) -> Tensor:
    """Rows where an attack returned the all-zero image for a non-zero input (Foolbox's C&W placeholder for "found
    nothing": it initialises its best adversarials to zeros and returns them where no iterate was adversarial)."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).reshape(x.shape)
    return (x_adv.flatten(1).abs().amax(1) == 0) & (x.flatten(1).abs().amax(1) > 0)


# ------------------------------------------------------------------------------------------------ timing


def unit_times(model: nn.Module, x: Tensor, reps: int = 5) -> tuple[float, float]:
    """Median seconds of one forward+backward pass (input gradient) and of one forward pass of batch ``x``,
    after one untimed pass of each (the first pass at a new batch shape pays for allocations)."""
    fb, f = [], []
    for r in range(reps + 1):
        xx = x.clone().requires_grad_(True)
        t = time.perf_counter()
        loss = F.cross_entropy(model(xx), torch.zeros(x.shape[0], dtype=torch.long), reduction="sum")
        torch.autograd.grad(loss, xx)
        t_fb = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            model(x)
        if r:
            fb.append(t_fb)
            f.append(time.perf_counter() - t)
    return statistics.median(fb), statistics.median(f)


def speed_ratio(seconds: float, fwd_per_point: float, bwd_per_point: float, t_fb: float, t_f: float) -> float:
    """Wall time over the ideal time of the passes used: each backward with its forward at the
    measured forward+backward time of the full batch, extra forwards at the forward-only time."""
    ideal = bwd_per_point * t_fb + max(fwd_per_point - bwd_per_point, 0.0) * t_f
    return seconds / ideal if ideal > 0 else float("nan")


class BatchLog(nn.Module):
    """Records the batch size of every forward call and how many backward passes went through it (DeepFool
    takes one per candidate class from the same forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[list[int]] = []  # [rows, backward passes]

    def forward(self, x: Tensor) -> Tensor:
        call = [x.shape[0], 0]
        self.calls.append(call)
        out = self.model(x)
        if out.requires_grad:
            def hook(g: Tensor) -> None:
                call[1] += 1

            out.register_hook(hook)
        return out


def batch_aware_limit(model: nn.Module, x: Tensor, calls: list[list[int]], reps: int = 5,
                      max_sizes: int = 96) -> float:
    """The compute limit of a run that made ``calls``: the sum over its forward calls of the measured time of
    one forward pass plus, per backward pass through it, the measured backward time (forward+backward minus
    forward), each *at that call's batch size*, so a per-sample early-stopping attack is compared with what its
    shrinking batches cost, not with the per-sample cost of the full batch (small batches cost more per sample
    on any hardware). Every batch size the run used is timed itself (the cost is far from linear between powers
    of two: on the digits CNN 26 rows cost 2.0 ms where interpolating between 16 and 32 says 1.8 ms); only a run
    with more than ``max_sizes`` distinct sizes falls back to the powers of two, interpolated linearly."""
    if not calls:
        return float("nan")
    n = x.shape[0]
    sizes = {min(rows, n) for rows, _ in calls}
    grid = sorted(sizes if len(sizes) <= max_sizes else {min(2**k, n) for k in range(n.bit_length() + 1)} | {n})
    units = {g: unit_times(model, x[:g], reps) for g in grid}

    def at(b: int, which: int) -> float:
        if b > n:
            return units[n][which] * b / n
        hi = next(g for g in grid if g >= b)
        lo = max([g for g in grid if g <= b], default=hi)
        if hi == lo:
            return units[hi][which]
        w = (b - lo) / (hi - lo)
        return (1 - w) * units[lo][which] + w * units[hi][which]

    return sum(at(rows, 1) + back * (at(rows, 0) - at(rows, 1)) for rows, back in calls)


def interleave(runners: dict[str, Callable[[], dict[str, Any]]], reps: int,
               log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run each runner ``reps`` times, alternating between them (in reverse order on every other rep, so that no
    library always runs right after the same neighbour); keep the last result and all wall times."""
    out: dict[str, dict[str, Any]] = {}
    for r in range(reps):
        order = list(runners.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:
            if name in out and out[name].get("error"):
                continue
            t = time.perf_counter()
            try:
                res = fn()
            except Exception as e:  # a peer that fails is reported, not fatal
                res = {"error": f"{type(e).__name__}: {e}"[:300]}
            dt = time.perf_counter() - t
            prev = out.get(name, {})
            res["times"] = [*prev.get("times", []), dt]
            out[name] = res
            log(f"    rep {r + 1} {name:<22} {dt:8.2f}s " + ("ERROR " + res["error"] if "error" in res else
                                                          ", ".join(f"{k}={v}" for k, v in res.items()
                                                                    if k in ("robust_accuracy", "success_rate",
                                                                             "median_norm"))))
    for res in out.values():
        res["seconds_median"] = statistics.median(res["times"])
    return out


def median_ci(values: list[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap interval for the median of ``values`` (resampled with replacement, fixed seed)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    gen = torch.Generator().manual_seed(seed)
    v = torch.tensor(values, dtype=torch.float64)
    picks = torch.randint(len(values), (resamples, len(values)), generator=gen)
    medians = v[picks].quantile(0.5, dim=1).sort().values
    tail = (1 - level) / 2
    return float(medians[int(tail * (resamples - 1))]), float(medians[int((1 - tail) * (resamples - 1))])


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf"
        return f"{v:.{nd}f}"
    return str(v)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(o: Any) -> Any:
        if isinstance(o, float) and (math.isinf(o) or math.isnan(o)):
            return str(o)
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, Tensor):
            return clean(o.tolist())
        return o

    path.write_text(json.dumps(clean(obj), indent=1))


def median_finite(t: Tensor) -> float:
    """Median over all points with inf for failures (as minimum-norm papers report)."""
    t = t.double()
    return float(t.median()) if t.numel() else float("nan")


# ------------------------------------------------------------------------------------------ markdown tables

LIBS = ("bastion", "torchattacks", "art", "foolbox", "adv-lib")


def md_whitebox(doc: dict[str, Any]) -> str:
    lines = ["| model | attack | norm, eps | attacked/points | library | "
             "robust acc (budget) or success / median norm / "
             "robust acc at eps (min-norm) | passes per point (fwd/bwd) | attack s (median, reps) | "
             "bastion speed ratio (per point / batch-aware) | bastion attack time / fastest peer (end to end) |",
             "|" + "---|" * 10]
    for r in doc["rows"]:
        for lib in LIBS:
            v = r["results"].get(lib)
            if v is None:
                continue
            if "error" in v:
                what = "error: " + v["error"][:80]
            elif "robust_accuracy" in v:
                what = fmt(v["robust_accuracy"], 4)
            else:
                what = (f"{fmt(v['success_rate'], 3)} / {fmt(v['median_norm'], 4)} / "
                        f"{fmt(v['robust_accuracy_at_eps'], 4)}")
                if v.get("zero_image_placeholders"):
                    what += (f" ({v['zero_image_placeholders']} zero-image placeholders not counted; "
                             f"{fmt(v['success_rate_with_placeholders'], 3)} with them)")
            passes = f"{v.get('fwd_per_point', '-')}/{v.get('bwd_per_point', '-')}" if "error" not in v else "-"
            t = f"{fmt(v.get('attack_seconds_median', v.get('seconds_median')), 2)} ({len(v.get('times', []))})"
            ratio = ""
            if lib == "bastion":
                ratio = fmt(v.get("speed_ratio"), 2)
                if v.get("speed_ratio_batch_aware") is not None:
                    ratio += f" / {fmt(v['speed_ratio_batch_aware'], 2)}"
            vs = ""
            if lib == "bastion" and r["fastest_peer"]:
                vs = f"{fmt(r['time_vs_fastest_peer'], 2)} ({r['fastest_peer']})"
                if r.get("end_to_end_vs_fastest_peer") is not None:
                    vs += f" ({fmt(r['end_to_end_vs_fastest_peer'], 2)})"
            lines.append(f"| {r['model']} | {r['attack']} | {r['norm']}, {r['eps']} | {r['attacked']}/{r['points']} | "
                         f"{lib} | {what} | {passes} | {t} | {ratio} | {vs} |")
    return "\n".join(lines)


def md_square(doc: dict[str, Any]) -> str:
    lines = ["| model | eps (L-inf) | attacked/points | library | robust acc | queries per point (mean) | "
             "wall s | bastion time / fastest peer | bastion median queries to success (broken points) | "
             "bastion success rate at 100 / 500 / 1000 / 5000 queries |", "|" + "---|" * 10]
    for r in doc["square"]:
        for lib in LIBS:
            v = r["results"].get(lib)
            if v is None:
                continue
            if "error" in v:
                lines.append(f"| {r['model']} | {r['eps']} | {r['attacked']}/{r['points']} | {lib} | error: "
                             f"{v['error'][:80]} | | | | | |")
                continue
            extra = ["", "", ""]
            if lib == "bastion":
                c = v["query_curve"]
                at = c["success_rate_at"]
                extra = [f"{fmt(r['time_vs_fastest_peer'], 2)} ({r['fastest_peer']})",
                         fmt(c["median_queries_broken"], 0),
                         " / ".join(fmt(at.get(k, at.get(str(k))), 3) for k in (100, 500, 1000, 5000))]
            lines.append(f"| {r['model']} | {r['eps']} | {r['attacked']}/{r['points']} | {lib} | "
                         f"{fmt(v['robust_accuracy'], 4)} | {v['queries_per_point']} | "
                         f"{fmt(v['seconds_median'], 1)} | {' | '.join(extra)} |")
    return "\n".join(lines)


def md_hsj(doc: dict[str, Any]) -> str:
    lines = ["| model | points attacked | HSJ median L2 | HSJ success | HSJ queries/point (mean, max) | HSJ s | "
             "C&W median L2 | C&W success | C&W s | HSJ / C&W median | per-point ratio median |",
             "|" + "---|" * 11]
    for r in doc["hopskipjump_vs_cw"]:
        h, c = r["hopskipjump"], r["cw"]
        lines.append(f"| {r['model']} | {r['points']} | {fmt(h['median_l2'], 4)} | {fmt(h['success_rate'], 3)} | "
                     f"{fmt(h['queries_per_point_mean'], 0)}, {h['queries_per_point_max']} | {h['seconds']} | "
                     f"{fmt(c['median_l2'], 4)} | {fmt(c['success_rate'], 3)} | {c['seconds']} | "
                     f"{fmt(r['median_ratio_hsj_over_cw'], 3)} | {fmt(r['per_point_ratio_median'], 3)} |")
    return "\n".join(lines)


def md_autoattack(doc: dict[str, Any]) -> str:
    lines = ["| model | norm, eps | points | clean | bastion standard | AA-100 (torchattacks parts) | gap (pp) | "
             "bastion s | AA-100 s | time ratio | bastion fast (s) | torchattacks AutoAttack, 10-step (s) | "
             "ART AutoAttack (s) |", "|" + "---|" * 13]
    for r in doc["rows"]:
        b, a, f = r["bastion-standard"], r["aa100-torchattacks"], r["bastion-fast"]
        t = r.get("torchattacks-AutoAttack-10step")
        art = r.get("art-AutoAttack")
        ts = f"{fmt(t['robust_accuracy'], 4)} ({t['seconds']})" if t else "not run"
        arts = ("error" if "error" in art else f"{fmt(art['robust_accuracy'], 4)} ({art['seconds']})") if art else \
            "not run"
        lines.append(f"| {r['model']} | {r['norm']}, {r['eps']} | {r['points']} | {fmt(r['clean_accuracy'], 4)} | "
                     f"{fmt(b['robust_accuracy'], 4)} | {fmt(a['robust_accuracy'], 4)} | {r['gap_pp_vs_aa100']} | "
                     f"{b['seconds']} | {a['seconds']} | {r['time_ratio_vs_aa100']} | "
                     f"{fmt(f['robust_accuracy'], 4)} ({f['seconds']}) | {ts} | {arts} |")
    lines += ["", "Per-stage costs (attacked points, broken, seconds, forward/backward passes per attacked point, "
              "robust accuracy after the stage):", "",
              "| model | norm | run | stage | attacked | broken | s | fwd/pt | bwd/pt | robust after |",
              "|" + "---|" * 10]
    for r in doc["rows"]:
        for run in ("bastion-standard", "aa100-torchattacks", "bastion-fast"):
            for s in r[run]["stages"]:
                lines.append(f"| {r['model']} | {r['norm']} | {run} | {s['part']} | {s['attacked']} | {s['broken']} | "
                             f"{s['seconds']} | {s['fwd_per_attacked_point']} | {s['bwd_per_attacked_point']} | "
                             f"{fmt(s['robust_accuracy_after'], 4)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # python bench/common.py whitebox|square|hsj|autoattack RESULT.json [...]: print the Markdown table(s).
    kind, files = sys.argv[1], sys.argv[2:]
    render = {"whitebox": md_whitebox, "square": md_square, "hsj": md_hsj, "autoattack": md_autoattack}[kind]
    for f in files:
        print(render(json.loads(Path(f).read_text())))
        print()
