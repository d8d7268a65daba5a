"""Fixtures shared by the black-box tests: one torch thread, a small MLP trained on digits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bastion.data import load_dataset


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    data = load_dataset("digits").train
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(20):
        order = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return model.eval().requires_grad_(False)
