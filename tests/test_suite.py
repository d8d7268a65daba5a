"""The standard suite: the cascade's worst case, and the masking flags on deliberately masked toy models."""

from __future__ import annotations

import time

import pytest
import torch
from torch import Tensor, nn

from bastion.evaluation import suite
from bastion.evaluation.adaptive import build_adaptation, probe
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.evaluation.suite import (
    SQUARE_CANARY,
    Canary,
    Stage,
    StageOutcome,
    robustness_curve,
    run_suite,
    suite_stages,
)
from bastion.threat import LpThreat


class Quantize(nn.Module):
    """A non-differentiable input quantizer (a classic masking defense): 4 grey levels."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 3) / 3


class NoisyInput(nn.Module):
    """A randomized defense: Gaussian noise on the input, drawn from the module's own generator."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.generator = torch.Generator().manual_seed(123)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sigma * torch.randn(x.shape, generator=self.generator)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def _fired(model: nn.Module, x: Tensor, y: Tensor) -> tuple[set[str], dict]:
    plan, flags = probe(model, x, y, LpThreat("linf", 0.2))
    return {f.name for f in flags if f.fired}, plan


def test_flags_silent_on_a_plain_model(digits_model: nn.Module, digits_points) -> None:
    fired, plan = _fired(digits_model, *digits_points)
    assert fired == set()
    assert plan == {"eot_samples": None, "bpda_modules": [], "log_probabilities": False, "detector_aware": False}


def test_quantizer_in_front_is_detected_and_bypassed_with_bpda(digits_model: nn.Module, digits_points) -> None:
    model = nn.Sequential(Quantize(), digits_model).eval()
    x, y = digits_points
    fired, plan = _fired(model, x, y)
    assert {"shattered_gradients", "non_differentiable_modules"} <= fired
    assert plan["bpda_modules"] == ["0"]
    threat = LpThreat("linf", 0.2)
    g = torch.Generator
    plain = run_suite(model, x, y, threat, version="fast", adapt=Adaptation(), generator=g().manual_seed(0))
    adaptive = run_suite(model, x, y, threat, version="fast", adapt=build_adaptation(model, plan),
                         generator=g().manual_seed(0))
    assert adaptive.robust.float().mean() < plain.robust.float().mean() - 0.2


def test_randomized_model_is_detected_and_gets_eot(digits_model: nn.Module, digits_points) -> None:
    model = nn.Sequential(NoisyInput(0.3), digits_model).eval()
    fired, plan = _fired(model, *digits_points)
    assert "randomness" in fired and plan["eot_samples"] == 20
    adapt = build_adaptation(model, plan)
    assert adapt.wrap is not None and any("EOT" in n for n in adapt.notes)


def test_scaled_logits_flag_vanishing_gradients(digits_model: nn.Module, digits_points) -> None:
    model = nn.Sequential(digits_model, Scale(1e4)).eval()
    fired, _ = _fired(model, *digits_points)
    assert "vanishing_gradients" in fired
    # The DLR/targeted stages are scale-invariant, so the suite still breaks the model.
    out = run_suite(model, *digits_points, LpThreat("linf", 0.3), version="fast",
                    generator=torch.Generator().manual_seed(0))
    assert out.robust.float().mean() < 0.1


def test_probability_outputs_are_flagged(digits_model: nn.Module, digits_points) -> None:
    model = nn.Sequential(digits_model, nn.Softmax(dim=1)).eval()
    fired, plan = _fired(model, *digits_points)
    assert "probability_outputs" in fired and plan["log_probabilities"]


def test_cascade_never_calls_robust_a_point_any_stage_broke(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    out = run_suite(digits_model, x, y, LpThreat("linf", 0.08), version="standard",
                    generator=torch.Generator().manual_seed(0))
    assert next(s.stage.part for s in out.stages) == "apgd-ce"
    for stage in out.stages:
        idx = stage.attacked.nonzero().flatten()
        broken_here = idx[stage.result.success]
        assert out.broken[broken_here].all(), stage.stage.part
        assert not out.robust[broken_here].any()
    assert torch.equal(out.robust, out.clean_correct & ~out.broken)
    # Later non-minimal stages only ran on points no earlier stage broke.
    seen = torch.zeros_like(out.broken)
    for stage in out.stages:
        if stage.stage.role != "minimal":
            assert not (stage.attacked & seen).any()
        seen |= torch.zeros_like(seen).index_fill_(0, stage.attacked.nonzero().flatten()[stage.result.success], True)
    # The curve from minimal norms agrees with the cascade at eps (it can only be lower or equal there).
    at_eps = robustness_curve(out.clean_correct, out.best_norm, [0.08])[0]
    assert at_eps <= float(out.robust.float().mean()) + 1e-9
    _assert_breaks_are_real(digits_model, x, y, LpThreat("linf", 0.08), out)
    # The curve stage ran on the first correct points, as many as a quarter of the earlier passes pays for.
    before = out.stages[:[s.stage.role for s in out.stages].index("minimal")]
    spent = sum(s.result.counts.total_forward + s.result.counts.total_backward for s in before)
    fmn = next(s for s in out.stages if s.stage.role == "minimal")
    cap = min(suite.CURVE_POINTS["standard"], max(suite.CURVE_MIN_POINTS, int(0.25 * spent / 201)))
    assert torch.equal(fmn.attacked, out.clean_correct & (out.clean_correct.cumsum(0) <= cap))


# ------------------------------------------------------------------------------------ the black-box canary


def _cheap_cascade(canary: int) -> list[Stage]:
    """A short white-box stage, then a Square stage with a canary (the mechanics of ``standard``, fewer passes)."""
    return [Stage("apgd-ce", "apgd", {"loss": "ce", "n_iter": 5}, "white-box"),
            Stage("square", "square", {"max_queries": 300}, "black-box", canary=Canary(canary, {"max_queries": 100}))]


def _square(out) -> StageOutcome:
    return next(s for s in out.stages if s.stage.part == "square")


def test_standard_runs_square_as_a_canary_and_thorough_on_everything() -> None:
    square = suite_stages("standard", "linf")[-1]
    assert square.attack == "square" and square.params == {"max_queries": 1000}
    assert square.canary == SQUARE_CANARY["standard"] == Canary(32, {"max_queries": 500})
    assert suite_stages("standard", "l2")[-1].canary == square.canary
    assert suite_stages("thorough", "linf")[-1].canary is None
    assert suite_stages("thorough", "linf")[-1].params["max_queries"] == 5000
    assert all(s.attack != "square" for s in suite_stages("standard", "l1"))


def test_canary_escalates_when_square_beats_masked_gradients(
    digits_model: nn.Module, digits_points, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quantized inputs without BPDA: zero gradients, so only the gradient-free stage gets anywhere.
    model = nn.Sequential(Quantize(), digits_model).eval()
    x, y = digits_points
    threat = LpThreat("linf", 0.3)
    monkeypatch.setitem(suite.SUITES._entries, "lp", lambda version, norm, aware: _cheap_cascade(8))
    out = run_suite(model, x, y, threat, adapt=Adaptation(), generator=torch.Generator().manual_seed(0))
    white = out.stages[0]
    left = out.clean_correct.clone()
    left[white.attacked.nonzero().flatten()[white.result.success]] = False
    sq = _square(out)
    assert sq.canary == 8 and sq.escalated and out.escalated == ["square"]
    assert int(left.sum()) > 8 and torch.equal(sq.attacked, left)  # then on every point still robust
    assert sq.result.success.sum() > 1
    # ``max_queries`` is the runner's per-point query budget: 100 in the canary, then 300 more in the escalation.
    assert int(sq.result.counts.forward.max()) <= 100 + 300  # canary budget + full budget, never more
    _assert_breaks_are_real(model, x, y, threat, out)


def test_canary_that_breaks_every_remaining_point_ends_the_stage(
    digits_model: nn.Module, digits_points, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few points, masked gradients: the canary sample holds every point still robust and Square breaks them all.
    model = nn.Sequential(Quantize(), digits_model).eval()
    x, y = digits_points
    x, y = x[:4], y[:4]
    threat = LpThreat("linf", 0.5)
    monkeypatch.setitem(suite.SUITES._entries, "lp", lambda version, norm, aware: _cheap_cascade(32))
    out = run_suite(model, x, y, threat, adapt=Adaptation(), generator=torch.Generator().manual_seed(0))
    sq = _square(out)
    assert sq.escalated and bool(sq.result.success.all()) and int(sq.attacked.sum()) == sq.canary > 0
    assert not out.robust.any()
    _assert_breaks_are_real(model, x, y, threat, out)


def test_canary_stays_small_when_square_finds_nothing(
    digits_model: nn.Module, digits_points, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = digits_points
    threat = LpThreat("linf", 0.005)  # too small for anything to break
    monkeypatch.setitem(suite.SUITES._entries, "lp", lambda version, norm, aware: _cheap_cascade(8))
    out = run_suite(digits_model, x, y, threat, generator=torch.Generator().manual_seed(0))
    sq = _square(out)
    assert int(out.clean_correct.sum()) > 8
    assert sq.canary == 8 and not sq.escalated and out.escalated == []
    assert int(sq.attacked.sum()) == 8 and not sq.result.success.any()
    assert int(sq.result.counts.forward.max()) == 100  # the canary's query budget, spent on an unbroken point
    # Seeded: the same generator seed picks the same canary sample.
    again = run_suite(digits_model, x, y, threat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_square(again).attacked, sq.attacked)


def _assert_breaks_are_real(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, out) -> None:
    """Every point the cascade calls broken has an adversarial example inside the threat that the model gets wrong,
    and each stage's successes (in subset order) are among the broken points."""
    broken = out.broken.nonzero().flatten()
    with torch.no_grad():
        assert (model(out.adversarial[broken]).argmax(1) != y[broken]).all()
    assert threat.contains(out.adversarial[broken], x[broken]).all()
    for stage in out.stages:
        hits = stage.attacked.nonzero().flatten()[stage.result.success]
        assert out.broken[hits].all() and not out.robust[hits].any()
        with torch.no_grad():
            assert (model(stage.result.adversarial[stage.result.success]).argmax(1) != y[hits]).all()
    assert torch.equal(out.robust, out.clean_correct & ~out.broken)


def test_combine_keeps_the_last_outcome_and_every_pass(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    x, y = x[:12], y[:12]
    threat = LpThreat("linf", 0.3)
    first = torch.zeros(12, dtype=torch.bool)
    first[[1, 4, 7]] = True
    second = torch.zeros(12, dtype=torch.bool)
    second[[4, 9, 10]] = True

    def on(mask: Tensor, steps: int):
        idx = mask.nonzero().flatten()
        return run_attack(digits_model, x[idx], y[idx], threat, "pgd", steps=steps, generator=torch.Generator())

    a, b = on(first, 2), on(second, 5)
    merged = suite._combine([(first, a), (second, b)], threat)
    assert merged.adversarial.shape[0] == 5  # points 1, 4, 7, 9, 10 in that order
    assert torch.equal(merged.adversarial[[0, 2]], a.adversarial[[0, 2]])  # 1 and 7: first run only
    assert torch.equal(merged.adversarial[[1, 3, 4]], b.adversarial)  # 4: the later run's outcome
    assert torch.equal(merged.success[[1, 3, 4]], b.success)
    assert int(merged.counts.forward[1]) == int(a.counts.forward[1] + b.counts.forward[0])
    assert merged.counts.total_backward == a.counts.total_backward + b.counts.total_backward


def test_black_box_flag_says_when_only_a_canary_sample_ran() -> None:
    from bastion.evaluation.diagnostics import check_black_box

    silent = check_black_box(0, attacked=32, candidates=181)
    assert not silent.fired and "32 of 181" in silent.evidence and silent.numbers["candidates"] == 181
    full = check_black_box(0, attacked=181, candidates=181)
    assert "of 181" not in full.evidence  # it ran on every candidate: its silence covers them all
    assert check_black_box(3, attacked=32, candidates=181).fired


def test_peak_memory_is_the_stages_own() -> None:
    """A stage that allocates 200 MB shows about that; one that allocates nothing shows about nothing (the process
    peak would show the same number for both)."""
    from bastion.evaluation.memory import PeakMemory

    with PeakMemory("cpu") as big:
        block = torch.ones(50 * 2**20)  # 200 MB, written so the pages are resident
        block += 1
        time.sleep(0.05)
        del block
    with PeakMemory("cpu") as small:
        time.sleep(0.05)
    assert big.mb is not None and small.mb is not None
    assert big.mb > 150 and small.mb < 20
