"""Targets (counting, budgets, batching), query curves, and the gray-box surrogate/transfer helpers."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bastion.blackbox import LabelTarget, ScoresUnavailableError, ScoreTarget, query_curve, serve_model
from bastion.blackbox.http import RemoteModel
from bastion.blackbox.transfer import label_with_target, train_surrogate, transfer_attack
from bastion.data import load_dataset
from bastion.errors import QueryBudgetExceeded
from bastion.oracle import attribute
from bastion.threat import LpThreat


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mlp(seed: int, hidden: int = 64) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_counts_repeated_rows_and_hard_budget() -> None:
    model = _mlp(0).eval()
    target = ScoreTarget(model, n=3, max_queries=5, batch_size=2)
    x = torch.rand(3, 1, 8, 8)
    out = target(x)
    # batches of 2 and one batch of 3 may round differently (seen: 6e-8 on an Intel Xeon), so compare to float32 noise
    assert torch.allclose(out, model(x), atol=1e-6) and not out.requires_grad
    with attribute(target, torch.tensor([0, 0, 0, 2])):
        target(x[[0, 0, 0, 2]])
    assert target.forward_counts.tolist() == [4, 1, 2]
    assert target.remaining().tolist() == [1, 4, 3]
    with pytest.raises(QueryBudgetExceeded), attribute(target, torch.tensor([0, 0])):
        target(x[[0, 0]])  # would take sample 0 to 6 > 5: refused whole, nothing charged
    assert target.forward_counts.tolist() == [4, 1, 2]


def test_label_target_hides_scores() -> None:
    model = _mlp(0).eval()
    x = torch.rand(4, 1, 8, 8)
    target = LabelTarget(model, n=4)
    assert torch.equal(target.labels(x), model(x).argmax(1))
    assert set(target(x).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ScoresUnavailableError):
        LabelTarget(model, n=4, strict=True)(x)
    with pytest.raises(ScoresUnavailableError, match="LabelTarget"):
        ScoreTarget(lambda z: model(z).argmax(1), n=4)(x)


def test_remote_label_target_needs_num_classes_for_one_hot() -> None:
    model = _mlp(0).eval()
    x = torch.rand(2, 1, 8, 8)
    with serve_model(model, mode="labels") as server:
        target = LabelTarget(RemoteModel(server.url), n=2)
        assert torch.equal(target.labels(x), model(x).argmax(1))
        with pytest.raises(ScoresUnavailableError, match="num_classes"):
            target(x)
        assert LabelTarget(RemoteModel(server.url), n=2, num_classes=10)(x).shape == (2, 10)


def test_query_curve() -> None:
    q = torch.tensor([0.0, 10.0, 30.0, math.inf, float("nan"), 50.0])
    curve = query_curve(q, budget=100, points=11)
    assert curve.queries.tolist() == list(range(0, 101, 10))
    assert curve.success_rate[0] == pytest.approx(1 / 6)
    assert curve.success_rate[-1] == pytest.approx(4 / 6)
    assert torch.allclose(curve.robust_accuracy, 1 - curve.success_rate)
    assert curve.median_queries == 10.0 and curve.mean_queries == pytest.approx(22.5)
    assert math.isnan(query_curve(torch.tensor([math.inf]), budget=5).median_queries)


def test_surrogate_from_partial_knowledge_transfers() -> None:
    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    target = train_surrogate(_mlp(0), data.train.x, data.train.y, epochs=15, generator=g)
    # Gray box: a third of the training data, labelled by querying the target; another architecture.
    known = data.train.x[: len(data.train) // 3]
    labels = label_with_target(target, known)
    surrogate = train_surrogate(_mlp(1, hidden=32), known, labels, epochs=30, generator=g)
    x, y = data.test.x[:64], data.test.y[:64]
    threat = LpThreat("linf", 0.2)
    result = transfer_attack(LabelTarget(target, n=64, strict=True), surrogate, x, y, threat,
                             diversity_prob=0.5, generator=torch.Generator().manual_seed(0))
    assert threat.contains(result.adversarial, x).all()
    assert result.surrogate_success_rate >= 0.9
    assert 0.5 <= result.success_rate <= 1.0
    custom = train_surrogate(_mlp(2), known, labels, train_fn=lambda m, a, b: None)
    assert not custom.training
