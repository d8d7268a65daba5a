"""The certification job: certify N points of a model, attack the same points, record both, report.

``certify_run(config, store)`` certifies the first ``n`` points of a split with one method (randomized
smoothing, IBP, CROWN / CROWN-IBP bounds or a 1-Lipschitz margin certificate) and runs an empirical attack on
the same points, so that the summary puts the guarantee (certified accuracy, a lower bound on the true robust
accuracy) next to the attack's robust accuracy (an upper bound) at every radius of ``radii``.

Resuming follows ``bastion.evaluate.job``: runs have kind ``"certify"`` and a key hashed from the full
configuration; each batch of points is processed in two parts, ``"certify"`` and ``"attack"``, each written in
its own transaction with its own generators (seeded from the run seed, the batch number and the part), so a
killed run resumes at the first unfinished (batch, part) and gives the same numbers as an uninterrupted run.

How certificates map onto the store's per-sample columns (no schema change):

part ``"certify"``
    ``clean_pred``: the certified class; ``-1`` where randomized smoothing abstains. For the deterministic
    methods it is the model's prediction. ``adv_pred``: the classifier's plain prediction (for smoothing the
    top class of the ``n`` noise samples, i.e. the smoothed classifier without abstention; else the model's).
    ``clean_correct``: ``clean_pred == label`` (certified at radius 0). ``success``: certified-and-correct at
    the headline radius ``eps``. ``norm``: the certified radius (0 when wrong or abstaining). Smoothing and
    Lipschitz give an exact radius; IBP/CROWN verify one radius at a time, so ``norm`` is the largest radius of
    ``radii`` that was verified (a valid, grid-rounded-down certificate). ``forward``: base-model forward passes
    (smoothing: ``n0 + n``) or bound propagations (IBP/CROWN); ``backward``: 0.
part ``"attack"``
    ``clean_pred``/``adv_pred``: the attacked classifier on the clean point and on the best adversarial example
    (``-1`` = none found); ``clean_correct``; ``success``: an adversarial example was found within the largest
    radius; ``norm``: its Lp norm, the smallest found (an upper bound on the minimal adversarial norm); pass
    counts in base-model passes.

For smoothing the attacked classifier is the smoothed one: the attack runs on a differentiable surrogate (the
average softmax of the base model over ``attack_noise`` fixed Gaussian draws, as in Salman et al. 2019) and
every candidate is then judged by the Monte Carlo smoothed classifier on ``check_samples`` fresh noise draws:
it counts only if the true class is confidently not the top class (the one-sided ``1 - alpha`` Clopper-Pearson
upper bound of its probability is below 1/2), so that Monte Carlo noise near the decision boundary does not
pass for an adversarial example. Budget attacks (``apgd``, ``pgd``) run at
every radius, only on the points not yet broken; ``fmn`` (minimal norm) runs once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from bastion.certify import crown, ibp, lipschitz, smoothing
from bastion.data import load_dataset
from bastion.errors import InvalidInputError
from bastion.evaluate.job import environment
from bastion.evaluate.runner import run_attack
from bastion.evaluate.store import Run, Store
from bastion.threat import LpThreat
from bastion.zoo import load_model

KIND = "certify"
REPORT_SCHEMA = "bastion.certify-report/1"
METHOD_NORM = {"smoothing": "l2", "lipschitz": "l2", "ibp": "linf", "crown": "linf"}
DEFAULT_RADII = {
    "smoothing": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
    "lipschitz": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    "ibp": [0.0, 0.1, 0.2, 0.3],
    "crown": [0.0, 0.1, 0.2, 0.3],
}
DEFAULT_ATTACK_PARAMS = {"apgd": {"n_iter": 50}, "pgd": {"steps": 40}, "fmn": {"steps": 100}, "none": {}}
_SALT = {"certify": 0, "attack": 500_009, "check": 900_007}


class CertifyConfig(BaseModel):
    """One certification run. ``eps`` is the headline radius (L2 for smoothing/lipschitz, L-inf for ibp and
    crown by default); ``radii`` is the curve's grid (``eps`` is added to it); ``preset`` fills ``n0``,
    ``samples`` and ``alpha`` of randomized smoothing where they are not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["smoothing", "ibp", "crown", "lipschitz"]
    model: str
    dataset: str | None = None
    split: Literal["train", "val", "test"] = "test"
    n: int = Field(100, gt=0, description="number of points, from the start of the split")
    eps: float | None = None
    radii: list[float] | None = None
    norm: Literal["linf", "l2"] | None = None  # crown only may use l2
    sigma: float | None = None
    preset: Literal["quick", "paper"] = "quick"
    n0: int | None = Field(None, gt=0)
    samples: int | None = Field(None, gt=0)
    alpha: float | None = None
    mc_batch: int = Field(1000, gt=0, description="noise samples per forward pass (smoothing)")
    bound: Literal["crown", "crown-ibp"] = "crown"  # crown: CROWN or CROWN-IBP intermediate bounds
    attack: Literal["apgd", "pgd", "fmn", "none"] = "apgd"
    attack_params: dict[str, Any] | None = None
    attack_noise: int = Field(16, gt=0, description="noise draws of the smoothing surrogate the attack uses")
    check_samples: int = Field(500, gt=0, description="noise draws judging each smoothing candidate")
    batch_size: int = Field(100, gt=0)
    seed: int = 0

    @field_validator("eps", "sigma")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"must be finite and non-negative, got {v}")
        return v

    @field_validator("radii")
    @classmethod
    def _radii(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not math.isfinite(r) or r < 0 for r in v)):
            raise ValueError(f"radii must be a non-empty list of finite non-negative numbers, got {v}")
        return v

    @model_validator(mode="after")
    def _method_fields(self) -> CertifyConfig:
        if self.method == "smoothing" and (self.sigma is None or self.sigma <= 0):
            raise ValueError("randomized smoothing needs a positive noise level: pass --sigma, e.g. --sigma 0.25")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.norm is not None and self.norm != METHOD_NORM[self.method] and self.method != "crown":
            raise ValueError(f"{self.method} certifies {METHOD_NORM[self.method]} balls only, not {self.norm}")
        return self

    # resolved values ---------------------------------------------------------------------------------
    def threat_norm(self) -> str:
        return self.norm or METHOD_NORM[self.method]

    def headline(self) -> float:
        if self.eps is not None:
            return self.eps
        grid = self.radii or DEFAULT_RADII[self.method]
        return max(grid)

    def grid(self) -> list[float]:
        base = self.radii if self.radii is not None else DEFAULT_RADII[self.method]
        return sorted({0.0, *map(float, base), float(self.headline())})

    def smoothing_params(self) -> dict[str, float | int]:
        p = smoothing.PRESETS[self.preset]
        return {"n0": int(self.n0 or p["n0"]), "n": int(self.samples or p["n"]),
                "alpha": float(self.alpha if self.alpha is not None else p["alpha"])}

    def resolved_attack_params(self) -> dict[str, Any]:
        return dict(self.attack_params if self.attack_params is not None else DEFAULT_ATTACK_PARAMS[self.attack])

    def key(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CertifyProgress:
    done: int  # points with both parts finished
    total: int
    certified: int  # certified-and-correct at the headline radius so far
    resumed: int = 0


@dataclass(frozen=True)
class CertifyOutcome:
    run_id: str
    summary: dict[str, Any]
    resumed_points: int


class SoftSmoothed(nn.Module):
    """Differentiable surrogate of the smoothed classifier: ``log mean_k softmax(f(x + sigma * noise_k))``
    over ``samples`` Gaussian draws fixed at construction (common to every input and every call, so the
    surrogate is a deterministic function the attacks can optimize)."""

    def __init__(self, model: nn.Module, sigma: float, samples: int, shape: tuple[int, ...],
                 generator: torch.Generator) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma
        self.register_buffer("noise", torch.randn((samples, *shape), generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        m = self.noise.shape[0]
        noisy = (x[:, None] + self.sigma * self.noise.to(x)[None]).flatten(0, 1)
        probs = F.softmax(self.model(noisy), dim=1).view(x.shape[0], m, -1).mean(1)
        return probs.clamp_min(1e-12).log()


# certify part ------------------------------------------------------------------------------------------
def _certify_batch(model: nn.Module, config: CertifyConfig, x: Tensor, y: Tensor,
                   generator: torch.Generator) -> dict[str, Tensor]:
    """Per point: certified class, plain prediction, certified radius, pass count."""
    n = x.shape[0]
    if config.method == "smoothing":
        p = config.smoothing_params()
        assert config.sigma is not None
        cert = smoothing.certify(model, x, sigma=config.sigma, n0=int(p["n0"]), n=int(p["n"]),
                                 alpha=float(p["alpha"]), batch_size=config.mc_batch, generator=generator)
        radius = torch.where(cert.prediction == y, cert.radius, 0.0)
        forward = torch.full((n,), int(p["n0"]) + int(p["n"]))
        return {"certified": cert.prediction, "plain": cert.counts.argmax(1), "radius": radius, "forward": forward}
    if config.method == "lipschitz":
        cert = lipschitz.lipschitz_certify(model, x, y)
        return {"certified": cert.prediction, "plain": cert.prediction, "radius": cert.radius.double(),
                "forward": torch.ones(n, dtype=torch.long)}
    with torch.no_grad():
        pred = model(x).argmax(1)
    radius = torch.zeros(n, dtype=torch.float64)
    forward = torch.ones(n, dtype=torch.long)
    alive = pred == y
    for r in [r for r in config.grid() if r > 0]:
        idx = alive.nonzero().flatten()
        if idx.numel() == 0:
            break
        forward[idx] += 1
        if config.method == "ibp":
            ok = ibp.verified(model, x[idx], y[idx], r)
        else:
            ok = crown.verified(model, x[idx], y[idx], r, norm=config.threat_norm(),  # type: ignore[arg-type]
                                intermediate="ibp" if config.bound == "crown-ibp" else "crown")
        radius[idx[ok]] = r
        alive[idx[~ok]] = False  # a ball that fails stays unverified at larger radii (the grid is ascending)
    return {"certified": pred, "plain": pred, "radius": radius, "forward": forward}


# attack part -------------------------------------------------------------------------------------------
def _smoothed_counts(model: nn.Module, x: Tensor, config: CertifyConfig, generator: torch.Generator) -> Tensor:
    assert config.sigma is not None
    return smoothing.sample_counts(model, x, sigma=config.sigma, n=config.check_samples,
                                   batch_size=config.mc_batch, generator=generator)


def _confidently_wrong(counts: Tensor, y: Tensor, alpha: float) -> Tensor:
    """The smoothed classifier does not return ``y``, with confidence ``1 - alpha``: the Clopper-Pearson upper
    bound of ``P(f(x + noise) = y)`` is below 1/2 (then ``y`` cannot be the top class)."""
    trials = int(counts[0].sum())
    others = trials - counts.gather(1, y[:, None]).squeeze(1)
    return smoothing.clopper_pearson_lower(others, trials, alpha) > 0.5


def _attack_batch(model: nn.Module, config: CertifyConfig, x: Tensor, y: Tensor, lower: float, upper: float,
                  generator: torch.Generator, check: torch.Generator) -> dict[str, Tensor]:
    """Per point: clean and adversarial predictions, found flag, smallest norm found, pass counts."""
    n = x.shape[0]
    smoothed = config.method == "smoothing"
    forward = torch.zeros(n, dtype=torch.long)
    backward = torch.zeros(n, dtype=torch.long)
    if smoothed:
        assert config.sigma is not None
        target: nn.Module = SoftSmoothed(model, config.sigma, config.attack_noise, tuple(x.shape[1:]), generator)
        target.eval()
        clean = _smoothed_counts(model, x, config, check).argmax(1)
        forward += config.check_samples
        scale = config.attack_noise
    else:
        target = model
        with torch.no_grad():
            clean = model(x).argmax(1)
        forward += 1
        scale = 1
    adv_pred = torch.full((n,), -1, dtype=torch.long)
    found = torch.zeros(n, dtype=torch.bool)
    norm = torch.full((n,), math.inf, dtype=torch.float64)
    if config.attack == "none":
        return {"clean": clean, "adv": adv_pred, "found": found, "norm": norm, "forward": forward,
                "backward": backward}
    params = config.resolved_attack_params()
    grid = [r for r in config.grid() if r > 0]
    radii = [1e6] if config.attack == "fmn" else grid
    for r in radii:
        idx = ((clean == y) & ~found).nonzero().flatten()
        if idx.numel() == 0:
            break
        threat = LpThreat(config.threat_norm(), r, lower=lower, upper=upper)  # type: ignore[arg-type]
        result = run_attack(target, x[idx], y[idx], threat, config.attack, generator=generator, **params)
        forward[idx] += result.counts.forward * scale
        backward[idx] += result.counts.backward * scale
        hit = result.success.clone()
        pred = result.adv_pred.clone()
        if smoothed and hit.any():
            sub = hit.nonzero().flatten()
            counts = _smoothed_counts(model, result.adversarial[sub], config, check)
            pred[sub] = counts.argmax(1)
            forward[idx[sub]] += config.check_samples
            hit[sub] = _confidently_wrong(counts, y[idx[sub]], float(config.smoothing_params()["alpha"]))
        if config.attack == "fmn":
            hit &= result.norm <= max(grid, default=0.0)  # beyond the curve's range: not reported
        win = idx[hit]
        found[win] = True
        adv_pred[win] = pred[hit]
        # inside the ball of r by the runner's projection; clamp float32 rounding (0.10000002 for r = 0.1)
        norm[win] = result.norm[hit].double() if config.attack == "fmn" else result.norm[hit].double().clamp(max=r)
    return {"clean": clean, "adv": adv_pred, "found": found, "norm": norm, "forward": forward,
            "backward": backward}


# the job -----------------------------------------------------------------------------------------------
def _generator(seed: int, batch: int, part: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + batch + _SALT[part])


def certify_run(
    config: CertifyConfig,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[CertifyProgress], None] | None = None,
) -> CertifyOutcome:
    """Run (or resume) the certification ``config`` and record it in ``store``."""
    model, meta = load_model(config.model)
    dataset = config.dataset or meta.dataset
    data = load_dataset(dataset, seed=config.seed)
    if tuple(data.spec.shape) != tuple(meta.input_shape):
        raise InvalidInputError(
            f"Model {config.model!r} takes inputs of shape {tuple(meta.input_shape)} but {dataset!r} has "
            f"{tuple(data.spec.shape)}; pick the data set the model was trained on ({meta.dataset!r})."
        )
    if config.method in ("ibp", "crown"):
        (ibp.ibp_layers if config.method == "ibp" else crown.crown_layers)(model)  # fail early, clearly
    if config.method == "lipschitz":
        lipschitz.lipschitz_constant(model)
    points = data.split(config.split).take(config.n)
    full = config.model_copy(update={"dataset": dataset})
    run_id = None if fresh else store.find_unfinished(KIND, full.key())
    run_id = run_id or store.create_run(KIND, full.key(), _stored_config(full), config.seed, environment())
    starts = list(range(0, len(points), config.batch_size))
    done = {part: store.done_batches(run_id, part) for part in ("certify", "attack")}
    finished = sum(min(config.batch_size, len(points) - s) for b, s in enumerate(starts)
                   if b in done["certify"] and b in done["attack"])
    already = finished
    certified = sum(r["success"] for r in store.samples(run_id, "certify"))
    if on_progress:
        on_progress(CertifyProgress(finished, len(points), certified, already))
    eps = full.headline()
    for b, start in enumerate(starts):
        x, y = points.x[start:start + config.batch_size], points.y[start:start + config.batch_size]
        if b not in done["certify"]:
            t0 = time.perf_counter()
            c = _certify_batch(model, full, x, y, _generator(config.seed, b, "certify"))
            seconds = time.perf_counter() - t0
            ok = c["certified"] == y
            rows = [(start + i, int(y[i]), int(c["certified"][i]), int(c["plain"][i]), int(ok[i]),
                     int(bool(ok[i]) and float(c["radius"][i]) >= eps), float(c["radius"][i]), int(c["forward"][i]), 0)
                    for i in range(len(y))]
            store.record_batch(run_id, "certify", b, start, start + len(y), seconds, rows)
            certified += sum(r[5] for r in rows)
        if b not in done["attack"]:
            t0 = time.perf_counter()
            a = _attack_batch(model, full, x, y, data.spec.lower, data.spec.upper,
                              _generator(config.seed, b, "attack"), _generator(config.seed, b, "check"))
            seconds = time.perf_counter() - t0
            rows = [(start + i, int(y[i]), int(a["clean"][i]), int(a["adv"][i]), int(a["clean"][i] == y[i]),
                     int(a["found"][i]), float(a["norm"][i]) if bool(a["found"][i]) else None,
                     int(a["forward"][i]), int(a["backward"][i])) for i in range(len(y))]
            store.record_batch(run_id, "attack", b, start, start + len(y), seconds, rows)
        finished += len(y)
        if on_progress:
            on_progress(CertifyProgress(finished, len(points), certified))
    summary = summarize(store, run_id, full)
    store.finish_run(run_id, summary)
    return CertifyOutcome(run_id, summary, already)


def _stored_config(config: CertifyConfig) -> dict[str, Any]:
    """The config as stored, with the resolved values (and the keys ``bastion runs list`` shows)."""
    out = config.model_dump(mode="json")
    out |= {"norm": config.threat_norm(), "eps": config.headline(), "radii": config.grid(),
            "attack_params": config.resolved_attack_params()}
    if config.method == "smoothing":
        p = config.smoothing_params()
        out |= {"n0": p["n0"], "samples": p["n"], "alpha": p["alpha"]}  # "n" stays the number of points
    return out


def _curve(values: list[float], grid: list[float], ok: Callable[[int, float], bool]) -> dict[str, float]:
    return {f"{r:g}": sum(ok(i, r) for i in range(len(values))) / max(len(values), 1) for r in grid}


def summarize(store: Store, run_id: str, config: CertifyConfig) -> dict[str, Any]:
    """Aggregate the stored rows of a certification run: both curves, abstentions, violations, timing."""
    cert = store.samples(run_id, "certify")
    att = {r["idx"]: r for r in store.samples(run_id, "attack")}
    grid, eps = config.grid(), config.headline()
    n = len(cert)
    radius = [float(r["norm"] or 0.0) for r in cert]
    correct = [bool(r["clean_correct"]) for r in cert]
    adv_norm = [att[r["idx"]]["norm"] if att.get(r["idx"]) and att[r["idx"]]["success"] else None for r in cert]
    attack_clean = [bool(att[r["idx"]]["clean_correct"]) if r["idx"] in att else False for r in cert]

    def certified_at(i: int, r: float) -> bool:
        return correct[i] and radius[i] >= r

    def robust_at(i: int, r: float) -> bool:
        return attack_clean[i] and (adv_norm[i] is None or adv_norm[i] > r)

    violations = [cert[i]["idx"] for i in range(n)
                  if correct[i] and adv_norm[i] is not None and radius[i] > adv_norm[i] + 1e-6]
    ctime, atime = store.batch_totals(run_id, "certify"), store.batch_totals(run_id, "attack")
    cert_curve, emp_curve = _curve(radius, grid, certified_at), _curve(radius, grid, robust_at)
    found = [a for a in adv_norm if a is not None]
    summary: dict[str, Any] = {
        "n": n,
        "method": config.method,
        "norm": config.threat_norm(),
        "eps": eps,
        "radii": grid,
        "certified_accuracy": cert_curve,
        "empirical_robust_accuracy": emp_curve,
        "certified_accuracy_at_eps": cert_curve[f"{eps:g}"],
        "clean_accuracy": sum(attack_clean) / max(n, 1),  # the (smoothed) classifier without abstention
        "certified_clean_accuracy": sum(correct) / max(n, 1),
        "robust_accuracy": emp_curve[f"{eps:g}"],  # empirical, as in evaluation runs
        "abstention_rate": sum(r["clean_pred"] == smoothing.ABSTAIN for r in cert) / max(n, 1),
        "mean_certified_radius": float(np.mean([radius[i] if correct[i] else 0.0 for i in range(n)])) if n else 0.0,
        "median_adversarial_norm": float(np.median(found)) if found else None,
        "violations": violations,
        "certify_seconds": round(ctime["seconds"], 3),
        "attack_seconds": round(atime["seconds"], 3),
        "certify_forward_passes": sum(r["forward"] for r in cert),
        "attack_passes": sum((a["forward"] or 0) + (a["backward"] or 0) for a in att.values()),
    }
    return summary


# reports -----------------------------------------------------------------------------------------------
def report_dict(run: Run) -> dict[str, Any]:
    return {"schema": REPORT_SCHEMA, "run_id": run.id, "kind": run.kind, "status": run.status,
            "created": run.created, "finished": run.finished, "config": run.config,
            "environment": run.environment, "summary": run.summary}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report_markdown(run: Run) -> str:
    """The report section: setup, the table of both curves, abstentions, timing, and what the numbers mean."""
    c, s = run.config, run.summary or {}
    norm = {"linf": "L∞", "l2": "L2"}.get(s.get("norm", ""), s.get("norm", ""))
    how = {"smoothing": f"randomized smoothing (Cohen et al. 2019), sigma {c.get('sigma')}, n0 {c.get('n0')}, "
                        f"n {c.get('samples')}, alpha {c.get('alpha')}",
           "ibp": "interval bound propagation (Gowal et al. 2018)",
           "crown": f"{'CROWN-IBP' if c.get('bound') == 'crown-ibp' else 'CROWN'} linear bounds (Zhang et al.)",
           "lipschitz": "1-Lipschitz margin certificate (Tsuzuku et al. 2018)"}.get(c.get("method", ""), "?")
    attack = c.get("attack")
    noise = c.get("attack_noise")
    on_smoothed = f" on the smoothed classifier ({noise} noise draws)" if c.get("method") == "smoothing" else ""
    lines = [
        f"## Certification `{run.id}`",
        "",
        f"Model **{c.get('model')}** on **{c.get('dataset')}** ({c.get('split')} split, first {s.get('n')} points); "
        f"{how}; {norm} radii; empirical attack **{attack}** {json.dumps(c.get('attack_params', {}))}"
        f"{on_smoothed}"
        f"; seed {c.get('seed')}.",
        "",
        f"| {norm} radius | certified accuracy | empirical robust accuracy ({attack}) |",
        "|---|---|---|",
    ]
    cert, emp = s.get("certified_accuracy", {}), s.get("empirical_robust_accuracy", {})
    lines += [f"| {r} | {_pct(cert.get(r))} | {_pct(emp.get(r))} |" for r in cert]
    lines += [
        "",
        f"Clean accuracy {_pct(s.get('clean_accuracy'))}; abstentions {_pct(s.get('abstention_rate'))}; "
        f"mean certified radius {s.get('mean_certified_radius', 0):.3f}; "
        f"certification {s.get('certify_seconds')} s, attack {s.get('attack_seconds')} s.",
        "",
        "Certified accuracy counts a point when the method proves the correct class on the whole ball (for "
        "smoothing: with probability at least 1 - alpha); it is a lower bound on the true robust accuracy, and "
        "the attack's robust accuracy is an upper bound.",
    ]
    if s.get("violations"):
        lines.append(f"\n**Warning**: on points {s['violations']} the attack found an adversarial example "
                     "closer than the certified radius. For smoothing this can happen with probability alpha "
                     "per point (or by Monte Carlo error near the boundary); otherwise it is a bug.")
    env = run.environment
    lines += ["", f"bastion {env.get('bastion')}, torch {env.get('torch')}, Python {env.get('python')}, "
                  f"{env.get('platform')}, {env.get('threads')} threads."]
    return "\n".join(lines) + "\n"


def plot_curves(run: Run, path: Path) -> Path:
    """PNG: certified accuracy against radius, with the empirical robust accuracy of the same points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.summary or {}
    radii = [float(r) for r in s.get("certified_accuracy", {})]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ax.plot(radii, [100 * v for v in s["certified_accuracy"].values()], "o-",
            label=f"certified ({run.config.get('method')})")
    ax.plot(radii, [100 * v for v in s["empirical_robust_accuracy"].values()], "s--",
            label=f"empirical ({run.config.get('attack')})")
    ax.set_xlabel(f"{'L-inf' if s.get('norm') == 'linf' else 'L2'} radius")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{run.config.get('model')}: certified vs empirical", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_reports(run: Run, folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    js, md, png = folder / "report.json", folder / "report.md", folder / "certified.png"
    js.write_text(json.dumps(report_dict(run), indent=2, sort_keys=True) + "\n")
    md.write_text(report_markdown(run))
    plot_curves(run, png)
    return js, md, png
