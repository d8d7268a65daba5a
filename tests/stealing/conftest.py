"""Shared pieces of the stealing tests: the shipped MNIST CNN as the victim, MNIST for scoring, Fashion-MNIST as the
thief's natural pool, and a view factory with a cheap copy recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.stealing import CopyRecipe, DefenseContext, QueryAPI, ThiefView, VictimSpec, load_algorithms

load_algorithms()

SPEC = VictimSpec((1, 28, 28), 10)


@dataclass(frozen=True)
class Data:
    val: Split  # 1,000 MNIST validation points: the defender's own data
    test: Split  # 1,000 MNIST test points: for scoring only
    pool: Tensor  # 5,000 Fashion-MNIST training images: the thief's natural pool
    pool_labels: Tensor
    seed: Tensor  # 100 MNIST training images, unlabelled: the thief's seed set


@pytest.fixture(scope="session")
def data() -> Data:
    mnist, fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
    return Data(mnist.val.take(1000), mnist.test.take(1000), fashion.train.x[:5000], fashion.train.y[:5000],
                mnist.train.x[:100])


@pytest.fixture(scope="session")
def victim() -> nn.Module:
    from bastion.zoo import load_model

    return load_model("mnist-cnn")[0].eval()


@pytest.fixture(scope="session")
def cheap_recipe() -> CopyRecipe:
    return CopyRecipe(arch="cnn", arch_kwargs={"width": 8, "hidden": 64}, epochs=3, min_steps=60, batch_size=128)


@pytest.fixture
def make_view(data: Data, cheap_recipe: CopyRecipe) -> Callable[..., ThiefView]:
    """``make_view(backend, budget, checkpoints=(), on_checkpoint=None, seed=0)``: a thief's view of ``backend``."""

    def make(backend: nn.Module, budget: int, checkpoints: tuple[int, ...] = (), on_checkpoint=None,
             seed: int = 0, recipe: CopyRecipe | None = None) -> ThiefView:
        r = recipe or cheap_recipe
        return ThiefView(QueryAPI(backend, budget=budget), data.pool, data.seed, SPEC,
                         lambda x, a: r.fit(x, a, SPEC), torch.Generator().manual_seed(seed),
                         pool_labels=data.pool_labels, checkpoints=checkpoints, on_checkpoint=on_checkpoint)

    return make


@pytest.fixture(scope="session")
def misinformed(victim: nn.Module, data: Data) -> tuple[nn.Module, DefenseContext]:
    """Adaptive misinformation at its defaults around the victim, and the context it was built from (its training is
    the costly part: built once for the defense tests and the contract tests)."""
    from bastion.stealing import OUTPUT_DEFENSES

    ctx = DefenseContext(data.val.x, data.val.y, SPEC, torch.Generator().manual_seed(0))
    return OUTPUT_DEFENSES.get("adaptive-misinformation").fn(victim, ctx), ctx


@pytest.fixture
def defense_context(data: Data) -> DefenseContext:
    return DefenseContext(data.val.x, data.val.y, SPEC, torch.Generator().manual_seed(0))


def rows_of(x: Tensor, data: Tensor) -> tuple[Tensor, Tensor]:
    """For each row of ``x``: the distance to the nearest row of ``data`` (0 for a copy of one) and its index."""
    return torch.cdist(x.flatten(1), data.flatten(1), compute_mode="donot_use_mm_for_euclid_dist").min(1)
