"""The standard attack suite: a cascade of complementary attacks, adaptive by default.

Each stage attacks only the points no earlier stage broke (the minimum-norm stage runs on every
correctly classified point, because its norms give the robust-accuracy-versus-eps curve). A point is
robust only if every stage failed on it: the per-point worst case. The attack mix follows the reasoning of
AutoAttack (Croce & Hein 2020: APGD-CE, targeted APGD-DLR, and a score-based Square attack as a
gradient-free check) with FMN (Pintor et al. 2021) as the minimum-norm member; versions trade cost for
thoroughness.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import get_attack
from bastion.evaluate.runner import Adaptation, AttackResult, run_attack
from bastion.threat import LpThreat


@dataclass(frozen=True)
class Stage:
    """One member of the cascade. ``part`` names it in the store and the reports."""

    part: str
    attack: str
    params: dict[str, Any]
    role: str  # "white-box", "minimal" or "black-box"


def _stages(version: str, norm: str) -> list[Stage]:
    iters = {"fast": 50, "standard": 100, "thorough": 100}[version]
    stages = [Stage("apgd-ce", "apgd", {"loss": "ce", "n_iter": iters}, "white-box"),
              Stage("apgd-t", "apgd-t", {"n_iter": iters, "n_target_classes": {"fast": 3, "standard": 9,
                                                                                "thorough": 9}[version]}, "white-box")]
    if version == "thorough":
        stages.insert(1, Stage("apgd-dlr", "apgd", {"loss": "dlr", "n_iter": iters, "restarts": 5}, "white-box"))
    if version != "fast":
        stages.append(Stage("fmn", "fmn", {"steps": {"standard": 100, "thorough": 500}[version]}, "minimal"))
        if norm in get_attack("square").norms:
            stages.append(Stage("square", "square", {"max_queries": {"standard": 1000, "thorough": 5000}[version]},
                                "black-box"))
    return stages


VERSIONS = ("fast", "standard", "thorough")
# The minimum-norm stage runs on every correct point for the curve, so it dominates the cost on models that
# break easily; ``standard`` runs it on at most this many correct points per batch (the curve is then estimated
# from that subsample, and the report says how many points it used). ``thorough`` runs it on all of them.
CURVE_POINTS = {"fast": 0, "standard": 128, "thorough": None}


def suite_stages(version: str, norm: str) -> list[Stage]:
    if version not in VERSIONS:
        from bastion.errors import InvalidInputError

        raise InvalidInputError(f"Unknown suite version {version!r}; use one of {', '.join(VERSIONS)}.")
    return _stages(version, norm)


@dataclass(frozen=True)
class StageOutcome:
    stage: Stage
    attacked: Tensor  # (N,) bool: points this stage ran on
    result: AttackResult  # on the attacked subset, in subset order
    seconds: float
    peak_rss_mb: float


@dataclass
class SuiteOutcome:
    """Per-point worst case over the cascade."""

    clean_correct: Tensor
    broken: Tensor
    best_norm: Tensor  # smallest perturbation norm known to break each point (inf if none)
    first_broken_by: list[str | None]
    adversarial: Tensor
    stages: list[StageOutcome] = field(default_factory=list)

    @property
    def robust(self) -> Tensor:
        return self.clean_correct & ~self.broken


def _peak_rss_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_suite(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    version: str = "standard",
    adapt: Adaptation | None = None,
    generator: torch.Generator | None = None,
    on_stage: Callable[[StageOutcome], None] | None = None,
) -> SuiteOutcome:
    """Run the cascade of ``version`` on one batch. Success is re-checked by the runner at every stage."""
    with torch.no_grad():
        clean_correct = (model(inputs).argmax(1) == labels).cpu()
    n = inputs.shape[0]
    out = SuiteOutcome(clean_correct, torch.zeros(n, dtype=torch.bool), torch.full((n,), float("inf")),
                       [None] * n, inputs.detach().cpu().clone())
    for stage in suite_stages(version, threat.norm):
        todo = _curve_subset(clean_correct, CURVE_POINTS[version]) if stage.role == "minimal" else \
            clean_correct & ~out.broken
        if not todo.any():
            continue
        idx = todo.nonzero().flatten()
        start = time.perf_counter()
        result = run_attack(model, inputs[idx.to(inputs.device)], labels[idx.to(labels.device)],
                            threat.select(idx), stage.attack, generator=generator,
                            adapt=adapt if stage.role != "black-box" else None, **stage.params)
        outcome = StageOutcome(stage, todo, result, time.perf_counter() - start, _peak_rss_mb())
        _merge(out, idx, result, stage.part)
        out.stages.append(outcome)
        if on_stage:
            on_stage(outcome)
    return out


def _curve_subset(clean_correct: Tensor, cap: int | None) -> Tensor:
    if cap is None:
        return clean_correct.clone()
    keep = clean_correct.clone()
    keep[keep.nonzero().flatten()[cap:]] = False
    return keep


def _merge(out: SuiteOutcome, idx: Tensor, result: AttackResult, part: str) -> None:
    for j, i in enumerate(idx.tolist()):
        norm = float(result.norm[j])
        if norm < out.best_norm[i]:
            out.best_norm[i] = norm
        if result.success[j] and not out.broken[i]:
            out.broken[i] = True
            out.first_broken_by[i] = part
            out.adversarial[i] = result.adversarial[j]


def robustness_curve(clean_correct: Tensor, best_norm: Tensor, eps_grid: list[float]) -> list[float]:
    """Robust accuracy at each eps: correct points whose smallest known adversarial norm exceeds eps."""
    return [float((clean_correct & (best_norm > e)).float().mean()) for e in eps_grid]
