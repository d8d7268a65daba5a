"""Shared fixtures: small real models trained in seconds on scikit-learn digits, temporary stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.pgserver import PgServer, unavailable_reason
from torch import nn

from bastion.data import load_dataset
from bastion.evaluation.store import Store
from bastion.zoo.train import TrainConfig, train_and_save


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """Tiny models run faster on one thread; two threads on a busy 2-core machine thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained normally on digits (a few seconds), saved as a real checkpoint."""
    out = tmp_path_factory.mktemp("zoo") / "digits-cnn"
    train_and_save("cnn", "digits", out, TrainConfig(epochs=12, patience=3, lr=3e-3, seed=0))
    return out


@pytest.fixture(scope="session")
def digits_model(digits_checkpoint: Path) -> nn.Module:
    from bastion.zoo import load_model

    model, _ = load_model(str(digits_checkpoint))
    return model


@pytest.fixture(scope="session")
def digits_points() -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("digits").test
    return test.x[:64], test.y[:64]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 for the whole session (skipped, saying how to install the
    server, where its binaries are absent)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.sqlite")
    yield s
    s.close()


def linear_model(w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """f(x) = W flatten(x) + b, in eval mode, parameters frozen."""
    layer = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), layer).eval().requires_grad_(False)
