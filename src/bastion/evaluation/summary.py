"""The summary of a run, computed from the stored per-sample rows (the numbers every report shows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bastion.evaluation.config import EvalConfig
from bastion.evaluation.diagnostics import check_black_box
from bastion.evaluation.suite import Stage, stages_from_dicts, suite_stages
from bastion.store import Store

SCHEMA = "bastion.summary/1"
CURVE_POINTS = 41


def _costs(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {"forward_passes": sum(r["forward"] for r in rows), "backward_passes": sum(r["backward"] for r in rows)}


def _attack_summary(store: Store, run_id: str, part: str, n: int) -> dict[str, Any]:
    rows = store.samples(run_id, part)
    clean = sum(r["clean_correct"] for r in rows)
    broken = sum(r["success"] for r in rows)
    norms = [r["norm"] for r in rows if r["success"] and r["norm"] is not None]
    totals = store.batch_totals(run_id, part)
    return {
        "attacked": len(rows), "broken": broken,
        "clean_accuracy": clean / n if n else 0.0,
        "robust_accuracy": (clean - broken) / n if n else 0.0,
        "attack_success_rate": broken / clean if clean else 0.0,
        "median_norm_of_successes": float(np.median(norms)) if norms else None,
        **_costs(rows), "seconds": round(totals["seconds"], 3), "outside_threat": totals["outside_threat"],
    }


def curve(worst: list[dict[str, Any]], minimal_idx: set[int], eps_max: float) -> dict[str, Any] | None:
    """Robust accuracy vs eps from the smallest known adversarial norm of the points the minimum-norm stage saw.

    Those are correctly classified points; the curve is clean accuracy times the fraction of them whose smallest
    known adversarial norm exceeds eps. ``None`` when no minimum-norm stage ran (the ``fast`` suite).
    """
    if not minimal_idx or not worst:
        return None
    grid = np.linspace(0.0, eps_max, CURVE_POINTS)
    norms = np.array([np.inf if r["norm"] is None else r["norm"] for r in worst if r["idx"] in minimal_idx])
    clean = sum(r["clean_correct"] for r in worst) / len(worst)
    acc = [float(clean * (norms > e).mean()) for e in grid]
    return {"eps": [float(e) for e in grid], "robust_accuracy": acc, "points": len(norms)}


def summarize(store: Store, run_id: str, config: EvalConfig, num_classes: int) -> dict[str, Any]:
    if config.attack is not None:
        rows = store.samples(run_id, config.attack)
        s = _attack_summary(store, run_id, config.attack, len(rows))
        n = len(rows)
        if config.targeted:  # success means reaching the target; accuracy is what still gets its true class
            still = sum(r["clean_correct"] and r["adv_pred"] == r["label"] for r in rows)
            s |= {"targeted": True, "targets": config.targets, "robust_accuracy": still / n if n else 0.0,
                  "targeted_success_rate": s["attack_success_rate"]}
        return {"schema": SCHEMA, "mode": "attack", "n": n, **s,
                "passes_per_point": (s["forward_passes"] + s["backward_passes"]) / max(n, 1),
                "attack_seconds": s["seconds"]}
    worst = store.samples(run_id, "worst")
    n = len(worst)
    clean = sum(r["clean_correct"] for r in worst)
    broken = sum(r["success"] for r in worst)
    stages = {}
    first: dict[str, int] = {}
    parts = store.parts(run_id)
    for stage in run_stages(store, run_id, config):
        if stage.part in parts:
            stages[stage.part] = _attack_summary(store, run_id, stage.part, n) | {
                "attack": stage.attack, "params": stage.params, "role": stage.role,
                "peak_rss_mb": store.get_artifact(run_id, f"peak_rss_mb/{stage.part}")}
    broken_by: dict[int, str] = {}
    for part in stages:  # stage order: the first stage that broke a point gets the credit
        for r in store.samples(run_id, part):
            if r["success"] and r["idx"] not in broken_by:
                broken_by[r["idx"]] = part
    for part in stages:
        first[part] = sum(1 for p in broken_by.values() if p == part)
    flags = (store.get_artifact(run_id, "probe_flags") or []) + (store.get_artifact(run_id, "outcome_flags") or [])
    if "square" in stages:
        order = list(stages)
        candidates = clean - sum(first.get(p, 0) for p in order[:order.index("square")])  # still robust before it
        flags.append(check_black_box(first.get("square", 0), stages["square"]["attacked"], candidates).to_dict())
    from bastion.evaluation.adaptive import plan_notes

    plan = store.get_artifact(run_id, "adaptation") or {}
    fwd, bwd = sum(s["forward_passes"] for s in stages.values()), sum(s["backward_passes"] for s in stages.values())
    return {
        "schema": SCHEMA, "mode": "suite", "suite": config.suite, "n": n,
        "clean_accuracy": clean / n if n else 0.0,
        "robust_accuracy": (clean - broken) / n if n else 0.0,
        "attack_success_rate": broken / clean if clean else 0.0,
        "stages": stages, "first_broken_by": first,
        "curve": curve(worst, _minimal_points(store, run_id, stages), 2 * config.eps if config.eps > 0 else 1.0),
        "flags": flags, "flags_fired": [f["name"] for f in flags if f["fired"]],
        "outcome_checks_run": config.outcome_checks,
        "adaptation": plan, "adaptation_notes": plan_notes(plan),
        "forward_passes": fwd, "backward_passes": bwd, "passes_per_point": (fwd + bwd) / max(n, 1),
        "attack_seconds": round(sum(s["seconds"] for s in stages.values()), 3),
        "outside_threat": sum(s["outside_threat"] for s in stages.values()),
        "median_norm_of_successes": _median([r["norm"] for r in worst if r["success"] and r["norm"] is not None]),
        "num_classes": num_classes,
    }


def run_stages(store: Store, run_id: str, config: EvalConfig) -> list[Stage]:
    """The cascade the run stored when it started (a store upgraded from schema 1 filled it in); today's suite
    definition only for a run that has none yet."""
    stored = store.get_artifact(run_id, "stages")
    if stored is not None:
        return stages_from_dicts(stored)
    aware = bool((store.get_artifact(run_id, "adaptation") or {}).get("detector_aware"))
    return suite_stages(config.suite or "standard", config.norm, aware)


def _minimal_points(store: Store, run_id: str, stages: dict[str, Any]) -> set[int]:
    return {r["idx"] for part, st in stages.items() if st["role"] == "minimal" for r in store.samples(run_id, part)}


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None
