"""Evasion judged by the defender: success and validity decided outside the attack, on a detector trained here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.ids.flowgen import synthetic_flows
from torch import nn

from bastion.ids.constraints import flow_threat
from bastion.ids.evasion import evade
from bastion.ids.features import FEATURE_NAMES


class Detector(nn.Module):
    """log1p then standardize, then a small MLP: enough for the synthetic flows."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        logged = torch.log1p(rows.clamp_min(0))
        self.register_buffer("mu", logged.mean(0))
        self.register_buffer("sd", logged.std(0).clamp_min(1e-6))
        self.net = nn.Sequential(nn.Linear(rows.shape[1], 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((torch.log1p(x.clamp_min(0)) - self.mu) / self.sd)


@pytest.fixture(scope="module")
def world() -> tuple[Detector, torch.Tensor, np.ndarray, object]:
    rows, labels = synthetic_flows(1500, seed=3)
    x, y = torch.as_tensor(rows, dtype=torch.float32), torch.as_tensor(labels)
    torch.manual_seed(0)
    det = Detector(x)
    opt = torch.optim.Adam(det.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(det(x), y).backward()
        opt.step()
    det.eval()
    assert (det(x).argmax(1) == y).float().mean() > 0.9
    threat = flow_threat(FEATURE_NAMES, rows, eps=0.2)
    attacks = x[y == 1][:200]
    return det, attacks, np.array(["Flood"] * 100 + ["Scan"] * 100), threat


def test_unconstrained_pgd_succeeds_on_flows_that_cannot_exist(world) -> None:
    det, rows, classes, threat = world
    result = evade(det, rows, classes, threat, "pgd", {"steps": 20})
    rates = result.rates()
    assert result.route == "unconstrained" and rates["attacked"] > 150
    assert rates["success_rate"] > 0.5  # the free feature vector fools the detector...
    assert rates["valid_rate"] < 0.05  # ...with flows that break the relations (a mean that is not sum / count)
    assert rates["valid_success_rate"] <= rates["valid_rate"]
    assert any(name.startswith("[") for name in result.violated)
    assert set(result.per_class()) == {"Flood", "Scan"}
    assert result.forward > 0 and result.backward > 0


def test_doing_nothing_is_valid_and_fails() -> None:
    rows, _labels = synthetic_flows(200, seed=4)
    threat = flow_threat(FEATURE_NAMES, rows, eps=0.1)
    x = torch.as_tensor(rows)

    class Alarm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            flat = v.sum(1) * self.w  # no gradient signal anywhere
            return torch.stack([flat, flat + 1], 1)

    # an always-alarm detector: every flow is caught; PGD cannot move it, the flows stay what they were
    result = evade(Alarm(), x[:50], np.array(["A"] * 50), threat, "fgsm")
    assert result.rates() == {"attacked": 50, "success_rate": 0.0, "valid_rate": 1.0, "valid_success_rate": 0.0}
