"""The standard attack suite: a cascade of complementary attacks, adaptive by default.

Each stage attacks only the points no earlier stage broke (the minimum-norm stage runs on correctly classified
points whether broken or not, because its norms give the robust-accuracy-versus-eps curve). A point is robust
only if every stage failed on it: the per-point worst case. The attack mix follows the reasoning of AutoAttack
(Croce & Hein 2020: APGD-CE, targeted APGD-DLR over 9 target classes, and a score-based Square attack as a
gradient-free check) with FMN (Pintor et al. 2021) as the minimum-norm member; versions trade cost for
thoroughness.

The score-based stage of ``standard`` starts as a *canary* (``Stage.canary``): a cheaper run on a seeded random
sample of the points still robust after the gradient-based stages. Only if that sample yields a break every
gradient-based stage missed does the stage escalate to its full budget on every point still robust. A
gradient-free attack beating gradient-based ones is the classic sign of gradient masking (Athalye, Carlini &
Wagner 2018, "Obfuscated gradients give a false sense of security"; Carlini et al. 2019, "On evaluating
adversarial robustness"), which is when the full black-box run matters; it is why AutoAttack ends with Square
(Croce & Hein 2020). The escalation is recorded on the stage outcome, and the report's ``black_box_stronger`` flag
fires.
``thorough`` runs its black-box stage on every remaining point at its full budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import get_attack
from bastion.evaluation.memory import PeakMemory
from bastion.evaluation.runner import Adaptation, AttackResult, run_attack
from bastion.oracle import Counts
from bastion.registry import Registry
from bastion.threat import LpThreat


@dataclass(frozen=True)
class Canary:
    """Run a stage first on at most ``points`` random points with ``params`` overriding the stage's own."""

    points: int
    params: dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One member of the cascade. ``part`` names it in the store and the reports; ``params`` are its full budget.

    ``canary``: run the canary first, and the stage itself (on every point still robust) only if the canary broke
    a point; ``None``: run the stage on every point at once. ``view``: what a white-box stage attacks -- the
    adaptation ``plan`` (EOT/BPDA/log-probabilities) or, for a detector, its ``detector-aware`` surrogate.
    """

    part: str
    attack: str
    params: dict[str, Any]
    role: str  # "white-box", "minimal" or "black-box"
    canary: Canary | None = None
    view: str = "plan"  # "plan" or "detector-aware"


VERSIONS = ("fast", "standard", "thorough")
_ITERS = {"fast": 50, "standard": 100, "thorough": 100}
_TARGETS = {"fast": 3, "standard": 9, "thorough": 9}
_FMN_STEPS = {"standard": 100, "thorough": 500}
_SQUARE_QUERIES = {"standard": 1000, "thorough": 5000}
# The black-box stage of ``standard`` first runs on at most 32 random still-robust points per batch, 500 queries each.
SQUARE_CANARY = {"fast": None, "standard": Canary(32, {"max_queries": 500}), "thorough": None}
# The minimum-norm stage runs on correct points (broken or not) for the curve. ``thorough`` runs it on all of them.
# ``standard`` runs it on the first correct points of each batch, at most CURVE_POINTS of them and, so that the curve
# never dominates the cost, only as many as CURVE_SHARE of the passes the earlier stages spent on the batch pays for,
# but on at least CURVE_MIN_POINTS (the report says how many points the curve used).
CURVE_POINTS = {"fast": 0, "standard": 128, "thorough": None}
CURVE_SHARE = {"fast": None, "standard": 0.25, "thorough": None}
CURVE_MIN_POINTS = 16


SuiteFn = Callable[[str, str | None, bool], list[Stage]]  # (version, norm, detector_aware) -> the cascade
SUITES: Registry[SuiteFn] = Registry("suite for threat kind", "bastion attacks list")


def register_suite(kind: str) -> Callable[[SuiteFn], SuiteFn]:
    """Register the cascade builder of a threat kind (``suite_stages`` dispatches on the threat's kind)."""
    return SUITES.decorator(kind, lambda fn: fn)  # type: ignore[return-value]


@register_suite("lp")
def _stages(version: str, norm: str | None, detector_aware: bool) -> list[Stage]:
    iters = _ITERS[version]
    stages = [Stage("apgd-ce", "apgd", {"loss": "ce", "n_iter": iters}, "white-box"),
              Stage("apgd-t", "apgd-t", {"n_iter": iters, "n_target_classes": _TARGETS[version]}, "white-box")]
    if version == "thorough":
        stages.insert(1, Stage("apgd-dlr", "apgd", {"loss": "dlr", "n_iter": iters, "restarts": 5}, "white-box"))
    if detector_aware:  # neither view of a detector is always the stronger one, so both run (docs/BENCHMARKS.md)
        stages += [replace(st, part=f"{st.part}-aware", view="detector-aware") for st in list(stages)]
    if version != "fast":
        stages.append(Stage("fmn", "fmn", {"steps": _FMN_STEPS[version]}, "minimal"))
        if norm in get_attack("square").norms:
            stages.append(Stage("square", "square", {"max_queries": _SQUARE_QUERIES[version]}, "black-box",
                                canary=SQUARE_CANARY[version]))
    return stages


def suite_stages(version: str, norm: str | None, detector_aware: bool = False, *, kind: str = "lp") -> list[Stage]:
    """The cascade of ``version`` for a threat of ``kind`` (and ``norm``, for Lp threats); ``detector_aware`` adds
    the white-box stages again on a detector's detector-aware surrogate."""
    if version not in VERSIONS:
        from bastion.errors import InvalidInputError

        raise InvalidInputError(f"Unknown suite version {version!r}; use one of {', '.join(VERSIONS)}.")
    return SUITES.get(kind)(version, norm, detector_aware)


def stage_dicts(stages: list[Stage]) -> list[dict[str, Any]]:
    """Stages as plain data: what a run stores as its ``stages`` artifact when its plan is made, so its summary
    and a resumed run follow the cascade it started with even after the suite definition changes."""
    return [asdict(st) for st in stages]


def stages_from_dicts(items: list[dict[str, Any]]) -> list[Stage]:
    def one(d: dict[str, Any]) -> Stage:
        canary = Canary(**d["canary"]) if d.get("canary") else None
        return Stage(d["part"], d["attack"], d["params"], d["role"], canary, d.get("view", "plan"))

    return [one(d) for d in items]


@dataclass(frozen=True)
class StageOutcome:
    """``canary``: points in the stage's canary sample (0: no canary); ``escalated``: the canary broke a point, so
    the stage then ran at its full budget on every point the canary left robust (``attacked`` covers both runs,
    ``result`` holds the later run's outcome for a point attacked twice, with the passes of both)."""

    stage: Stage
    attacked: Tensor  # (N,) bool: points this stage ran on
    result: AttackResult  # on the attacked subset, in subset order
    seconds: float
    peak_rss_mb: float | None  # the peak memory the stage added, MB (evaluation.memory.PeakMemory)
    canary: int = 0
    escalated: bool = False


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

    @property
    def escalated(self) -> list[str]:
        """Canary stages that found a break the gradient-based stages missed (a gradient-masking sign)."""
        return [s.stage.part for s in self.stages if s.escalated]


@dataclass(frozen=True)
class _Batch:
    """One batch and how to attack it (everything a stage needs besides the points to attack)."""

    model: nn.Module
    inputs: Tensor
    labels: Tensor
    threat: LpThreat
    adapt: Adaptation | None
    generator: torch.Generator | None
    detector_adapt: Adaptation | None = None

    def attack(self, stage: Stage, todo: Tensor) -> AttackResult:
        idx = todo.nonzero().flatten()
        x, y = self.inputs[idx.to(self.inputs.device)], self.labels[idx.to(self.labels.device)]
        adapt = None if stage.role == "black-box" else \
            self.detector_adapt if stage.view == "detector-aware" else self.adapt
        return run_attack(self.model, x, y, self.threat.select(idx), stage.attack, generator=self.generator,
                          adapt=adapt, **stage.params)


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
    detector_adapt: Adaptation | None = None,
    stages: list[Stage] | None = None,
) -> SuiteOutcome:
    """Run the cascade of ``version`` on one batch. Success is re-checked by the runner at every stage.
    ``detector_adapt`` (a detector's detector-aware view, ``evaluate.adaptive.detector_adaptation``) adds the
    white-box stages again on that view. ``stages``: the cascade a stored run started with (default: ``version``'s
    cascade of today)."""
    with torch.no_grad():
        clean_correct = (model(inputs).argmax(1) == labels).cpu()
    n = inputs.shape[0]
    out = SuiteOutcome(clean_correct, torch.zeros(n, dtype=torch.bool), torch.full((n,), float("inf")),
                       [None] * n, inputs.detach().cpu().clone())
    batch = _Batch(model, inputs, labels, threat, adapt, generator, detector_adapt)
    if stages is None:
        stages = suite_stages(version, getattr(threat, "norm", None), detector_adapt is not None, kind=threat.kind)
    for stage in stages:
        todo = _curve_subset(clean_correct, _curve_cap(version, stage, out.stages)) if stage.role == "minimal" \
            else clean_correct & ~out.broken
        if not todo.any():
            continue
        outcome = _run_stage(batch, stage, todo)
        _merge(out, outcome.attacked.nonzero().flatten(), outcome.result, stage.part)
        out.stages.append(outcome)
        if on_stage:
            on_stage(outcome)
    return out


def _run_stage(batch: _Batch, stage: Stage, todo: Tensor) -> StageOutcome:
    """The stage's outcome with its own peak memory (``PeakMemory``: what the stage added, not the process peak)."""
    with PeakMemory(batch.inputs.device) as memory:
        outcome = _attack_stage(batch, stage, todo)
    return replace(outcome, peak_rss_mb=memory.mb)


def _attack_stage(batch: _Batch, stage: Stage, todo: Tensor) -> StageOutcome:
    start = time.perf_counter()
    if stage.canary is None:
        return StageOutcome(stage, todo, batch.attack(stage, todo), time.perf_counter() - start, None)
    sample = _random_subset(todo, stage.canary.points, batch.generator)
    first = batch.attack(replace(stage, params={**stage.params, **stage.canary.params}), sample)
    size = int(sample.sum())
    if not first.success.any():
        return StageOutcome(stage, sample, first, time.perf_counter() - start, None, canary=size)
    rest = todo.clone()
    rest[sample.nonzero().flatten()[first.success]] = False
    if not rest.any():  # the canary held every remaining point and broke them all: nothing left to escalate to
        return StageOutcome(stage, sample, first, time.perf_counter() - start, None, canary=size, escalated=True)
    result = _combine([(sample, first), (rest, batch.attack(stage, rest))], batch.threat)
    return StageOutcome(stage, sample | rest, result, time.perf_counter() - start, None, canary=size,
                        escalated=True)


def _random_subset(mask: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """``k`` of the ``True`` entries of ``mask`` (all if fewer), drawn from ``generator`` (a fixed seed without
    one, so the global RNG is left alone)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    idx = mask.nonzero().flatten()
    pick = torch.randperm(idx.numel(), generator=gen, device=gen.device)[:k].cpu()
    keep = torch.zeros_like(mask)
    keep[idx[pick]] = True
    return keep


_PER_POINT = ("adversarial", "clean_pred", "adv_pred", "clean_correct", "success", "norm")


def _combine(parts: list[tuple[Tensor, AttackResult]], threat: LpThreat) -> AttackResult:
    """Runs of one attack on subsets (``(N,)`` masks) of a batch as one result on their union, in subset order.

    A point in several subsets keeps the outcome of the last run that attacked it, and the passes of all of them.
    """
    union = torch.zeros_like(parts[0][0])
    for mask, _ in parts:
        union |= mask
    pos = union.long().cumsum(0) - 1  # row of each batch point in the union subset
    size, first = int(union.sum()), parts[0][1]
    values = {name: getattr(first, name).new_zeros((size, *getattr(first, name).shape[1:])) for name in _PER_POINT}
    forward, backward = torch.zeros(size, dtype=torch.long), torch.zeros(size, dtype=torch.long)
    for mask, result in parts:
        rows = pos[mask]
        for name in _PER_POINT:
            values[name][rows] = getattr(result, name)
        forward.index_add_(0, rows, result.counts.forward)
        backward.index_add_(0, rows, result.counts.backward)
    return replace(first, **values, threat=threat.select(union.nonzero().flatten()), counts=Counts(forward, backward),
                   params=parts[-1][1].params, seconds=sum(r.seconds for _, r in parts),
                   outside_threat=sum(r.outside_threat for _, r in parts))


def _curve_cap(version: str, stage: Stage, done: list[StageOutcome]) -> int | None:
    """How many correct points the minimum-norm ``stage`` may run on (``None``: all)."""
    cap, share = CURVE_POINTS[version], CURVE_SHARE[version]
    if cap is None or share is None:
        return cap
    spent = sum(s.result.counts.total_forward + s.result.counts.total_backward for s in done)
    per_point = 2 * int(stage.params.get("steps", 100)) + 1  # FMN: steps + 1 forward, steps backward passes
    return min(cap, max(CURVE_MIN_POINTS, int(share * spent / per_point)))


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
