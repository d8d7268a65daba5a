"""Detectors reject with an extra logit; the runner's rejection-aware accounting on constructed cases."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.base import AttackSpec
from bastion.data import load_dataset
from bastion.defenses.inference import build_defense, false_rejection_rate
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat

DETECTORS = ["feature-squeezing-detector", "mahalanobis-detector"]


def _noise_attack(model, inputs, labels, threat, *, targeted=False, generator=None):
    """Replaces every input by uniform noise inside the (whole-box) threat model: far off the data."""
    return torch.rand(inputs.shape, generator=generator)


NOISE = AttackSpec("noise", _noise_attack, ("linf",), "budget", "white-box", "none")


@pytest.fixture(scope="module")
def cal():
    return load_dataset("digits").train


@pytest.mark.parametrize("name", DETECTORS)
def test_threshold_gives_the_false_positive_rate(name: str, digits_model, cal) -> None:
    det = build_defense(name, digits_model, data=cal)
    assert det.reject_class == 10
    frr = false_rejection_rate(det, cal.x[:1000] if name != "mahalanobis-detector" else cal.x)
    assert frr <= 0.05 + 2 / len(cal.x) + (0.05 if name == "mahalanobis-detector" else 0)


@pytest.mark.parametrize("name", DETECTORS)
def test_rejection_aware_accounting(name: str, digits_model, digits_points, cal) -> None:
    x, y = digits_points
    det = build_defense(name, digits_model, data=cal)
    # Never rejecting: the same numbers as the bare model.
    det.threshold.fill_(float("inf"))
    plain = run_attack(det, x, y, LpThreat("linf", 1.0), NOISE, generator=torch.Generator().manual_seed(0))
    bare = run_attack(digits_model, x, y, LpThreat("linf", 1.0), NOISE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.success, bare.success) and bare.success.any()
    # Always rejecting: every clean input is a false rejection (misclassified), and no attack succeeds.
    det.threshold.fill_(float("-inf"))
    assert false_rejection_rate(det, x) == 1.0
    allr = run_attack(det, x, y, LpThreat("linf", 1.0), NOISE, generator=torch.Generator().manual_seed(0))
    assert allr.clean_accuracy == 0.0 and not allr.success.any()
    # Threshold at the median score of the noise images: half are rejected. A rejected example is never a
    # success; a misclassified, unrejected one is.
    det = build_defense(name, digits_model, data=cal)
    first = run_attack(det, x, y, LpThreat("linf", 1.0), NOISE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = det.score(first.adversarial)
    det.threshold.fill_(float(scores[first.clean_correct].median()))
    res = run_attack(det, x, y, LpThreat("linf", 1.0), NOISE, generator=torch.Generator().manual_seed(0))
    rejected = res.adv_pred == 10
    wrong = res.clean_correct & (res.adv_pred != y)
    assert (wrong & rejected).any() and (wrong & ~rejected).any()
    assert torch.equal(res.success, wrong & ~rejected)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_aware_surrogate(name: str, digits_model, digits_points, cal) -> None:
    from bastion.defenses.inference.detectors import detector_aware_surrogate

    x, y = digits_points
    det = build_defense(name, digits_model, data=cal)
    surrogate = detector_aware_surrogate(det)
    assert surrogate is not None and detector_aware_surrogate(digits_model) is None
    probe_x = x[:8].clone().requires_grad_(True)
    out = surrogate(probe_x)
    assert out.shape == (8, 10)
    torch.nn.functional.cross_entropy(out, y[:8]).backward()
    assert probe_x.grad is not None and probe_x.grad.abs().sum() > 0


def test_the_suite_attacks_a_detector_both_ways(digits_model, digits_points, cal) -> None:
    """The probe marks a detector; the suite then runs its white-box stages on the plan's view *and* on the
    detector-aware surrogate (He et al. 2017), and the per-point worst case is no weaker than either alone."""
    from bastion.defenses.inference.detectors import JointSurrogate
    from bastion.evaluation.adaptive import build_adaptation, detector_adaptation, probe
    from bastion.evaluation.suite import run_suite

    x, y = digits_points
    det = build_defense("feature-squeezing-detector", digits_model, data=cal, bits=0, median=2)
    threat = LpThreat("linf", 0.2)
    plan, _ = probe(det, x[:32], y[:32], threat)
    assert plan["detector_aware"] and not probe(digits_model, x[:32], y[:32], threat)[0]["detector_aware"]
    aware = detector_adaptation(det, plan)
    assert aware is not None and isinstance(aware.surrogate, JointSurrogate)
    assert detector_adaptation(digits_model, plan | {"detector_aware": False}) is None

    def robust(**views: object) -> tuple[float, list[str]]:
        out = run_suite(det, x, y, threat, version="fast", generator=torch.Generator().manual_seed(0), **views)
        return float(out.robust.float().mean()), [s.stage.part for s in out.stages]

    plan_only, parts = robust(adapt=build_adaptation(det, plan))
    aware_only, _ = robust(adapt=aware)
    both, both_parts = robust(adapt=build_adaptation(det, plan), detector_adapt=aware)
    assert parts == ["apgd-ce", "apgd-t"] or parts == ["apgd-ce"]
    assert {"apgd-ce-aware"} <= set(both_parts) or both == 0.0
    assert both <= min(plan_only, aware_only) + 1e-9
