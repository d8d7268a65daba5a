"""The certification job: certify N points of a model, attack the same points, record both, report.

``certify_run(config, store)`` certifies the first ``n`` points of a split with one method (randomized
smoothing, IBP, CROWN / CROWN-IBP bounds or a 1-Lipschitz margin certificate) and runs an empirical attack on
the same points, so that the summary puts the guarantee (certified accuracy, a lower bound on the true robust
accuracy) next to the attack's robust accuracy (an upper bound) at every radius of ``radii``.

Resuming follows ``bastion.evaluation.job``: runs have kind ``"certify"`` and a key hashed from the full
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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.certification import crown, ibp, lipschitz, smoothing
from bastion.certification.config import CertifyConfig
from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.evaluation.job import environment
from bastion.evaluation.resolve import resolve_device
from bastion.evaluation.runner import run_attack
from bastion.evaluation.setup import check_fits
from bastion.store import Store
from bastion.threat import LpThreat
from bastion.zoo import load_model

KIND = "certify"
REPORT_SCHEMA = "bastion.certify-report/1"
_SALT = {"certify": 0, "attack": 500_009, "check": 900_007}


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
        self.register_buffer("noise", torch.randn((samples, *shape), generator=generator, device=generator.device))

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
def _generator(seed: int, batch: int, part: str, device: torch.device) -> torch.Generator:
    """The batch's generator for one part, on the data's device (the evaluation job's rule)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch + _SALT[part])


@dataclass(frozen=True)
class CertifySetup:
    """What a certification runs on, resolved: the model, the points, the input box and the full config."""

    model: nn.Module
    points: Split
    lower: float
    upper: float
    config: CertifyConfig


def certify_run(
    config: CertifyConfig,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[CertifyProgress], None] | None = None,
) -> CertifyOutcome:
    """Run (or resume) the certification ``config`` and record it in ``store``."""
    return run_certify_setup(certify_prepare(config), store, fresh=fresh, on_progress=on_progress)


def check_method(model: nn.Module, method: str) -> None:
    """Fail early and clearly when ``method`` cannot bound ``model``'s layers."""
    if method in ("ibp", "crown"):
        (ibp.ibp_layers if method == "ibp" else crown.crown_layers)(model)
    if method == "lipschitz":
        lipschitz.lipschitz_constant(model)


def certify_prepare(config: CertifyConfig) -> CertifySetup:
    """Resolve the model name and data set of ``config``."""
    model, meta = load_model(config.model)
    dataset = config.dataset or meta.dataset
    data = load_dataset(dataset, seed=config.seed)
    check_fits(config.model, meta, data)
    check_method(model, config.method)
    full = config.model_copy(update={"dataset": dataset})
    return CertifySetup(model, data.split(config.split).take(config.n), data.spec.lower, data.spec.upper, full)


def run_certify_setup(
    setup: CertifySetup,
    store: Store,
    *,
    fresh: bool = False,
    on_progress: Callable[[CertifyProgress], None] | None = None,
    device: str | torch.device | None = "cpu",
) -> CertifyOutcome:
    """Run (or resume) a prepared certification into ``store`` (what ``bastion.certify`` calls), batch by batch
    on ``device``."""
    full, config = setup.config, setup.config
    done_before = None if fresh else store.find_finished(KIND, full.key())
    if done_before is not None:  # the same certification, finished: nothing is recomputed
        if on_progress:
            on_progress(CertifyProgress(len(setup.points), len(setup.points), 0, len(setup.points)))
        return CertifyOutcome(done_before, store.get_run(done_before).summary or {}, len(setup.points))
    dev = resolve_device(device)
    model, points = setup.model.to(dev), setup.points
    run_id = None if fresh else store.find_unfinished(KIND, full.key())
    run_id = run_id or store.create_run(KIND, full.key(), _stored_config(full), config.seed, environment(dev))
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
        x, y = points.x[start:start + config.batch_size].to(dev), points.y[start:start + config.batch_size].to(dev)
        if b not in done["certify"]:
            t0 = time.perf_counter()
            c = _certify_batch(model, full, x, y, _generator(config.seed, b, "certify", dev))
            seconds = time.perf_counter() - t0
            ok = c["certified"] == y
            rows = [(start + i, int(y[i]), int(c["certified"][i]), int(c["plain"][i]), int(ok[i]),
                     int(bool(ok[i]) and float(c["radius"][i]) >= eps), float(c["radius"][i]), int(c["forward"][i]), 0)
                    for i in range(len(y))]
            store.record_batch(run_id, "certify", b, start, start + len(y), seconds, rows)
            certified += sum(r[5] for r in rows)
        if b not in done["attack"]:
            t0 = time.perf_counter()
            a = _attack_batch(model, full, x, y, setup.lower, setup.upper,
                              _generator(config.seed, b, "attack", dev), _generator(config.seed, b, "check", dev))
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
