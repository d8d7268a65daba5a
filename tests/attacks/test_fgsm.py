"""FGSM's shortcut (one fused add and one clip from the input) lands where the general projection does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks.fgsm import fgsm
from bastion.attacks.losses import LOSSES, input_gradient
from bastion.attacks.steps import lp_step
from bastion.threat import LpThreat


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_shortcut_matches_the_general_projection(digits_model: nn.Module, digits_points, norm: str) -> None:
    x, y = digits_points
    eps = torch.linspace(0.05, 0.8 if norm == "l2" else 0.3, x.shape[0])  # per-sample eps, some steps hit the box
    threat = LpThreat(norm, eps)
    _, grad, _ = input_gradient(digits_model, x, y, LOSSES["ce"], False)
    reference = threat.project(x + lp_step(grad, eps, norm), x)
    out = fgsm(digits_model, x, y, threat)
    assert torch.allclose(out, reference, atol=1e-6)
    assert bool(threat.contains(out, x).all())
    clipped = (x + lp_step(grad, eps, norm) - reference).abs().flatten(1).amax(1) > 1e-6
    assert bool(clipped.any())  # the box did cut some steps, so the clip was exercised
    masked = LpThreat(norm, eps, mask=torch.arange(x[0].numel()).view_as(x[0]) % 2 == 0)
    assert torch.equal((fgsm(digits_model, x, y, masked) - x)[:, ~masked.mask], torch.zeros_like(x[:, ~masked.mask]))
