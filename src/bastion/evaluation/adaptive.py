"""Adaptive by default: probe the model, then decide what the gradient attacks should see.

Randomness -> EOT (Athalye et al. 2018) over ``eot_samples`` draws; non-differentiable modules -> BPDA
with the identity as the backward pass; probability outputs -> attack their logarithm; a detector (a model
with a reject class) -> the suite adds white-box stages on the detector-aware surrogate (He et al. 2017 for
feature squeezing, Carlini & Wagner 2017 for differentiable detectors), which must fool the classifier *and*
pass the detector; neither way of attacking a detector is always the stronger, so both run. The plan is a
small JSON-able dict, stored with the run, so a resumed run attacks exactly the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.adaptive import StraightThroughOps, eot, straight_through
from bastion.defenses.inference.detectors import detector_aware_surrogate
from bastion.evaluation.diagnostics import (
    Flag,
    LogOfProbabilities,
    check_gradients,
    check_probabilities,
    check_randomness,
    find_nondifferentiable,
    hooks_supported,
    with_bpda,
)
from bastion.evaluation.runner import Adaptation
from bastion.threat import LpThreat


def probe(model: nn.Module, x: Tensor, y: Tensor, threat: LpThreat, *, eot_samples: int = 20
          ) -> tuple[dict[str, Any], list[Flag]]:
    """Run the probe diagnostics on a few points; return the adaptation plan and the flags."""
    scale = float(threat.eps_for(x[:1])[0]) if threat.norm == "linf" else 0.1
    scale = max(scale, 0.05)
    flags = [check_randomness(model, x), check_probabilities(model, x)]
    flags += check_gradients(model, x, y, scale, threat.clip)
    nondiff = find_nondifferentiable(model, x, scale)
    checked = hooks_supported(model)
    flags.append(Flag("non_differentiable_modules", bool(nondiff),
                      f"modules whose output moves with the input but pass back no gradient: {nondiff}" if nondiff
                      else "every module passes gradients" if checked else
                      "not checked module by module: a TorchScript model takes no forward hooks (the whole-model "
                      "gradient checks above still ran)", {"modules": nondiff, "checked": checked}))
    fired = {f.name for f in flags if f.fired}
    ops = step_operations(model, x) if fired & GRADIENT_BREAKS and not nondiff else []
    if ops:
        flags.append(Flag("non_differentiable_operations", True,
                          f"step operations inside the forward pass block the input's gradient: {ops}; attacks go "
                          "straight through them (BPDA at the operation)", {"operations": ops}))
    plan = {
        "eot_samples": eot_samples if "randomness" in fired else None,
        "bpda_modules": nondiff,
        **({"straight_through_ops": ops} if ops else {}),  # absent otherwise: plans of other models are unchanged
        "log_probabilities": "probability_outputs" in fired,
        "detector_aware": detector_aware_surrogate(model) is not None,
    }
    return plan, flags


GRADIENT_BREAKS = {"shattered_gradients", "vanishing_gradients", "detached_gradients"}


def step_operations(model: nn.Module, x: Tensor) -> list[str]:
    """The step operations (round, floor, ceil, trunc, sign) the model applies to something that depends on its input:
    where no module blocks the gradient, these are where it breaks."""
    mode = StraightThroughOps()
    with mode, torch.enable_grad():
        model(x.detach().clone().requires_grad_(True))
    return sorted(mode.seen)


def plan_notes(plan: dict[str, Any]) -> list[str]:
    notes = []
    if plan.get("bpda_modules"):
        notes.append(f"BPDA (identity backward) through {plan['bpda_modules']}: they block gradients")
    if plan.get("straight_through_ops"):
        notes.append(f"BPDA at the operations {plan['straight_through_ops']} inside the forward pass (identity "
                     "backward): they block gradients")
    if plan.get("eot_samples"):
        notes.append(f"EOT over {plan['eot_samples']} draws per gradient: the model is randomized")
    if plan.get("log_probabilities"):
        notes.append("attacks use log-probabilities: the model outputs probabilities")
    if plan.get("detector_aware"):
        notes.append("a detector: extra white-box stages attack its detector-aware surrogate")
    return notes


def build_adaptation(model: nn.Module, plan: dict[str, Any]) -> Adaptation:
    """Turn a stored plan into what the attacks see (the re-check still uses the model itself)."""
    surrogate: nn.Module | None = None
    if plan.get("bpda_modules"):
        surrogate = with_bpda(model, list(plan["bpda_modules"]))
    if plan.get("straight_through_ops"):
        surrogate = straight_through(surrogate or model)
    if plan.get("log_probabilities"):
        surrogate = LogOfProbabilities(surrogate or model)
    samples = plan.get("eot_samples")
    wrap = (lambda counted: eot(counted, samples)) if samples else None
    return Adaptation(surrogate=surrogate, wrap=wrap, notes=tuple(plan_notes(plan)))


def detector_adaptation(model: nn.Module, plan: dict[str, Any]) -> Adaptation | None:
    """What the detector-aware stages see (None when the model is not a detector): the detector-aware surrogate
    of the model with the plan's BPDA patches, under the plan's EOT."""
    if not plan.get("detector_aware"):
        return None
    base = with_bpda(model, list(plan["bpda_modules"])) if plan.get("bpda_modules") else model
    surrogate = detector_aware_surrogate(base)
    samples = plan.get("eot_samples")
    wrap = (lambda counted: eot(counted, samples)) if samples else None
    return Adaptation(surrogate=surrogate, wrap=wrap, notes=("detector-aware surrogate",))
