import pytest
import torch
from torch import nn

from bastion.errors import QueryBudgetExceeded
from bastion.oracle import CountingModel, attribute


def test_counts_forward_and_backward_per_sample() -> None:
    model = CountingModel(nn.Linear(3, 2), n=4)
    x = torch.randn(4, 3, requires_grad=True)
    model(x).sum().backward()
    with torch.no_grad():
        model(x)
    with attribute(model, torch.tensor([1, 3])):
        model(x[:2]).sum().backward()
    c = model.counts()
    assert c.forward.tolist() == [2, 3, 2, 3]
    assert c.backward.tolist() == [1, 2, 1, 2]


def test_unattributed_subset_is_an_error() -> None:
    model = CountingModel(nn.Linear(3, 2), n=4)
    with pytest.raises(RuntimeError, match="attribute"):
        model(torch.randn(2, 3))


def test_budget_is_enforced_per_sample() -> None:
    model = CountingModel(nn.Linear(3, 2), n=2, max_queries=2)
    x = torch.randn(2, 3)
    model(x)
    with attribute(model, torch.tensor([0])):
        model(x[:1])
    with pytest.raises(QueryBudgetExceeded), attribute(model, torch.tensor([0])):
        model(x[:1])
    with attribute(model, torch.tensor([1])):
        model(x[1:])  # sample 1 still has budget
    assert model.counts().forward.tolist() == [2, 2]


def test_counter_is_found_through_wrappers_and_deep_inside() -> None:
    from bastion.attacks.adaptive import eot
    from bastion.oracle import find_counter

    counter = CountingModel(nn.Linear(3, 2), n=4)
    assert find_counter(counter) is counter
    assert find_counter(eot(counter, samples=2)) is counter  # the .model chain
    nested = nn.Sequential(nn.Identity(), nn.Sequential(counter))  # no .model chain: the module walk
    assert find_counter(nested) is counter
    assert find_counter(nn.Linear(3, 2)) is None
    wrapped = eot(nested, samples=2)
    with attribute(wrapped, torch.tensor([0, 2])):
        wrapped(torch.randn(2, 3))
    assert counter.counts().forward.tolist() == [2, 0, 2, 0]  # two draws each, attributed to samples 0 and 2


def test_tallied_counts_follow_the_rows_at_call_time() -> None:
    """Passes are added lazily, one run per stretch of calls with the same rows tensor; a rows tensor written to
    in place between calls, or more stretches than the counter keeps pending, still count exactly."""
    model = CountingModel(nn.Linear(3, 2), n=4)
    rows = torch.tensor([0, 1])
    with attribute(model, rows):
        model(torch.randn(2, 3, requires_grad=True)).sum().backward()
        model(torch.randn(2, 3))
    rows[1] = 3  # the same tensor object, new contents
    with attribute(model, rows):
        model(torch.randn(2, 3, requires_grad=True)).sum().backward()
    c = model.counts()
    assert c.forward.tolist() == [3, 2, 0, 1]
    assert c.backward.tolist() == [2, 1, 0, 1]
    for i in range(100):  # a new rows tensor at every call
        with attribute(model, torch.tensor([i % 4])):
            model(torch.randn(1, 3))
    assert model.counts().forward.tolist() == [28, 27, 25, 26]


def test_attribution_points_the_counter_and_restores_it() -> None:
    from bastion.oracle import attribution

    model = CountingModel(nn.Linear(3, 2), n=4)
    with attribute(model, torch.tensor([0, 1, 2])), attribution(model) as point:
        point(torch.tensor([3]))
        model(torch.randn(1, 3))
        point(torch.tensor([1, 2]))
        model(torch.randn(2, 3))
        model(torch.randn(2, 3))
    assert model.counts().forward.tolist() == [0, 2, 2, 1]
    assert model._index is None  # the outer attribute() put back what was there before it
    with attribution(nn.Linear(3, 2)) as point:  # no counter: a no-op
        point(torch.tensor([0]))
