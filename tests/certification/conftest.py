"""Fixtures of the certification tests: digits and small models trained in seconds on 2 cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from certify_helpers import digits_cnn, digits_mlp, fit, single_thread
from torch import Tensor, nn

from bastion.data import load_dataset


@pytest.fixture(scope="session")
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    data = load_dataset("digits")
    return data.train.x, data.train.y, data.test.x, data.test.y


@pytest.fixture(scope="session")
def trained_mlp(digits: tuple[Tensor, ...]) -> nn.Module:
    x, y, _, _ = digits
    return fit(digits_mlp(), x, y, steps=150)


@pytest.fixture(scope="session")
def trained_cnn(digits: tuple[Tensor, ...]) -> nn.Module:
    x, y, _, _ = digits
    return fit(digits_cnn(), x, y, steps=100)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield
