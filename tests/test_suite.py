"""The standard suite: the cascade's worst case, and the masking flags on deliberately masked toy models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.evaluate.adaptive import build_adaptation, probe
from bastion.evaluate.runner import Adaptation
from bastion.evaluate.suite import robustness_curve, run_suite
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
    assert plan == {"eot_samples": None, "bpda_modules": [], "log_probabilities": False}


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
