"""The query API and the thief's view: hard budgets, answers, checkpoints, replay."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError, QueryBudgetExceeded
from bastion.stealing import QueryAPI
from bastion.stealing.base import as_probabilities


def test_budget_is_hard(victim, data) -> None:
    api = QueryAPI(victim, budget=10)
    api.query(data.pool[:10])
    with pytest.raises(QueryBudgetExceeded, match="budget of 10"):
        api.query(data.pool[10:11])  # one query more is refused
    assert api.used == 10


def test_refused_batch_is_not_sent(victim, data) -> None:
    sent = []
    api = QueryAPI(lambda x: sent.append(x.shape[0]) or victim(x), budget=5)
    with pytest.raises(QueryBudgetExceeded):
        api.query(data.pool[:6])
    assert sent == [] and api.used == 0


def test_zero_budget_is_one_clear_line(victim) -> None:
    with pytest.raises(InvalidInputError, match="budget of 0 allows no query"):
        QueryAPI(victim, budget=0)


def test_answers_are_probabilities_or_labels(victim, data) -> None:
    probs = QueryAPI(victim, budget=5).query(data.pool[:5])
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(1), torch.ones(5))
    labels = QueryAPI(lambda x: victim(x).argmax(1), budget=5)
    out = labels.query(data.pool[:5])
    assert labels.answers == "labels" and out.dtype == torch.long and torch.equal(out, probs.argmax(1))


def test_probabilities_are_kept_as_they_are() -> None:
    p = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    assert torch.equal(as_probabilities(p), p)
    assert torch.allclose(as_probabilities(torch.tensor([[0.0, 0.0]])), torch.tensor([[0.5, 0.5]]))


def test_checkpoints_cut_batches_and_see_everything_so_far(victim, data, make_view) -> None:
    seen = []
    view = make_view(victim, 25, checkpoints=(7, 20), on_checkpoint=lambda q, x, a: seen.append((q, len(x), len(a))))
    view.ask(data.pool[:15])
    view.ask(data.pool[15:23])
    view.finish()
    assert seen == [(7, 7, 7), (20, 20, 20), (23, 23, 23)]
    with pytest.raises(QueryBudgetExceeded):
        view.ask(data.pool[:3])


def test_replay_answers_without_asking_and_notices_divergence(victim, data) -> None:
    first = QueryAPI(victim, budget=30)
    first.query(data.pool[:10])
    first.query(data.pool[10:20])
    calls = []
    again = QueryAPI(lambda x: calls.append(len(x)) or victim(x), budget=30, replay=first.transcript)
    assert torch.equal(again.query(data.pool[:10]), first.transcript.answers[0])
    assert calls == [] and again.replayed == 10
    again.query(data.pool[30:40])  # not what was asked before: asked of the victim
    assert calls == [10] and again.diverged and again.used == 20


def test_a_proposed_solver_makes_the_checkpoint_copy(victim, data, make_view) -> None:
    made, solved = [], []
    view = make_view(victim, 20, checkpoints=(10,))
    view.on_checkpoint = lambda q, x, a: made.append(view.copy(x, a))
    assert isinstance(view.copy(data.pool[:0], torch.zeros(0)), torch.nn.Module)  # no proposal: the recipe's copy
    solution = torch.nn.Identity()
    view.propose(lambda x, a: solved.append((x.shape[0], tuple(a.shape))) or solution)
    view.ask(data.pool[:12])
    assert made == [solution] and solved == [(10, (10, 10))]  # solved on what was answered at the checkpoint
