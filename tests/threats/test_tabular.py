"""The tabular threat with feature constraints, on flows small enough to check by hand."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.threats import Threat, threat_from_dict
from bastion.threats.relations import parse_relation
from bastion.threats.tabular import TabularThreat

# port (immutable), packets (integer >= 1), bytes (integer), mean = bytes / packets (derived), max >= mean
COLUMNS = ("port", "packets", "bytes", "mean", "max")
RELATIONS = ("[mean] == [bytes] / [packets]", "[max] >= [mean]", "[max] <= [bytes]")


def threat(eps: float = 0.1, norm: str = "linf", **kw: object) -> TabularThreat:
    return TabularThreat(COLUMNS, norm, eps, lower=torch.tensor([0.0, 1, 0, 0, 0]),
                         upper=torch.tensor([65535.0, 101, 10000, 10000, 1500]),
                         integer=torch.tensor([True, True, True, False, True]),
                         mutable=torch.tensor([False, True, True, True, True]), relations=RELATIONS, **kw)


def flows() -> torch.Tensor:
    return torch.tensor([[80.0, 4, 400, 100, 200], [22.0, 10, 1000, 100, 100], [53.0, 1, 0, 0, 0]],
                        dtype=torch.float64)


def test_relations_evaluate_in_closed_form() -> None:
    cols = {"a": 0, "b": 1, "c d/s": 2}
    x = torch.tensor([[6.0, 3.0, 7.0], [1.0, 0.0, 2.5]])
    rel = parse_relation("[c d/s] >= max([a], [b]) + floor([a] / [b]) - -1", cols)
    assert torch.equal(rel.lhs(x), x[:, 2])
    assert torch.equal(rel.rhs(x), torch.tensor([6.0 + 2 + 1, 1.0 + 0 + 1]))  # x / 0 is 0
    assert rel.holds(x).tolist() == [False, True]
    assert rel.defines is None and parse_relation("[a] == [b] * 2", cols).defines == 0


@pytest.mark.parametrize("text", ["[a] <= __import__('os').system('x')", "[a] <= [b].real", "[a] <= [a] ** 2",
                                  "[a] + [b]", "[a] <= [b] <= [a]", "[a] <= [zz]", "[a] <= ("])
def test_bad_relations_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_relation(text, {"a": 0, "b": 1})
    assert "\n" not in str(info.value)


def test_cycles_and_double_definitions_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="cycle"):
        TabularThreat(("a", "b"), "linf", 0.1, torch.zeros(2), torch.ones(2), relations=("[a] == [b]", "[b] == [a]"))
    with pytest.raises(InvalidInputError, match="defined twice"):
        TabularThreat(("a", "b"), "linf", 0.1, torch.zeros(2), torch.ones(2), relations=("[a] == [b]", "[a] == 1"))


def test_structure_and_protocol() -> None:
    t = threat()
    assert isinstance(t, Threat)
    assert t.derived.tolist() == [False, False, False, True, False]
    assert t.free.tolist() == [False, True, True, False, True]
    assert torch.equal(t.scale, torch.tensor([65535.0, 100, 10000, 10000, 1500], dtype=torch.float64))
    again = threat_from_dict(t.to_dict())
    x = flows()
    assert isinstance(again, TabularThreat) and again.to_dict() == t.to_dict()
    assert torch.equal(again.project(x + 7.3, x), t.project(x + 7.3, x))


def test_complete_is_differentiable_through_the_derived_mean() -> None:
    t = threat()
    x = flows().requires_grad_(True)
    t.complete(x)[:, 3].sum().backward()
    # d(bytes / packets) / d bytes = 1 / packets; / d packets = -bytes / packets^2; the stale mean gets no gradient
    assert torch.allclose(x.grad[:, 2], 1 / flows()[:, 1])
    assert torch.allclose(x.grad[:, 1], -flows()[:, 2] / flows()[:, 1] ** 2)
    assert torch.equal(x.grad[:, 3], torch.zeros(3, dtype=torch.float64))


def test_project_repairs_every_constraint() -> None:
    t, x = threat(eps=0.05), flows()
    wild = x + torch.tensor([[9.0, 3.7, -33.3, 55.0, -50.0]], dtype=torch.float64)
    out = t.project(wild, x)
    assert t.contains(out, x).all()
    assert torch.equal(out[:, 0], x[:, 0])  # the port is immutable
    # packets: +3.7 is inside the 5-packet budget (0.05 * 100) and rounds towards the input: +3
    assert torch.equal(out[:, 1], x[:, 1] + 3)
    # bytes: -33.3 is inside the budget (500) and rounds towards the input, then the box (>= 0)
    assert torch.equal(out[:, 2], (x[:, 2] - 33).clamp_min(0))
    assert torch.allclose(out[:, 3], torch.where(out[:, 1] > 0, out[:, 2] / out[:, 1], 0))  # mean recomputed
    # row 1: max 100 - 50 fell below the new mean 967 / 13 = 74.4, so it is clamped up and rounded to 75
    assert out[1, 4] == 75 and (out[:, 4] >= out[:, 3] - 1e-9).all() and (out[:, 4] <= out[:, 2]).all()


def test_an_unrepairable_candidate_is_reported_not_hidden() -> None:
    t, x = threat(eps=0.05), flows()[:1]
    # bytes 400 -> 67 forces max (200) down to 67: a change of 133 > the 75 (0.05 * 1500) the budget allows
    out = t.project(x + torch.tensor([[0.0, 0, -333.3, 0, 0]], dtype=torch.float64), x)
    assert out[0, 4] == 67 and not bool(t.contains(out, x)[0])
    assert bool(t.violations(out, x)["budget"][0])


def test_project_stays_in_the_l2_ball_in_the_scaled_space() -> None:
    t, x = threat(eps=0.02, norm="l2"), flows()
    out = t.project(x + torch.tensor([[0.0, 50, 5000, 0, 500]], dtype=torch.float64), x)
    assert (t.distance(out, x) <= 0.02 + 1e-9).all() and t.contains(out, x).all()
    # row 2 (1 packet, 0 bytes): one projection gives 2 packets, 127 bytes, max 63 < mean 63.5; the rounds of ball
    # projection and repair settle on a real flow inside the ball instead (1 packet of 28 bytes)
    assert out[2, 1:].tolist() == [1.0, 28.0, 28.0, 28.0]


@pytest.mark.parametrize(("column", "value", "broken"), [
    (0, 81.0, "immutable"), (1, 4.5, "integer"), (4, 90.0, "[max] >= [mean]"),
    (3, 99.0, "[mean] == [bytes] / [packets]"),
    (2, 1000.0, "budget"), (1, 0.0, "box"),
])
def test_contains_names_what_broke(column: int, value: float, broken: str) -> None:
    t, x = threat(eps=0.05), flows()[:1]
    bad = x.clone()
    bad[0, column] = value
    if column == 2:
        bad = t.complete(bad)
        bad[0, 4] = 1000.0
    names = {k for k, v in t.violations(bad, x).items() if bool(v[0])}
    assert broken in names
    assert not bool(t.contains(bad, x)[0])


def test_random_starts_are_valid_and_seeded() -> None:
    t, x = threat(eps=0.1), flows()
    a = t.random_start(x, torch.Generator().manual_seed(1))
    b = t.random_start(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and t.contains(a, x).all() and not torch.equal(a, x)


def test_data_that_contradicts_the_constraints_is_one_line() -> None:
    x = flows()
    x[1, 3] = 7.0  # a mean that is not bytes / packets
    with pytest.raises(InvalidInputError, match=r"mean\] == .* fails on 1 of 3 input rows \(first: row 1\)"):
        threat().validate(x)
    with pytest.raises(InvalidInputError, match="lower is above upper"):
        TabularThreat(("a",), "linf", 0.1, torch.ones(1), torch.zeros(1))


def test_one_hot_groups_stay_one_hot() -> None:
    t = TabularThreat(("u", "tcp", "udp"), "linf", 0.5, torch.zeros(3), torch.ones(3), groups=((1, 2),))
    x = torch.tensor([[0.5, 1.0, 0.0]])
    out = t.project(torch.tensor([[0.7, 0.2, 0.9]]), x)
    assert torch.equal(out, torch.tensor([[0.7, 0.0, 1.0]])) and t.contains(out, x).all()
    frozen = TabularThreat(("u", "tcp", "udp"), "linf", 0.5, torch.zeros(3), torch.ones(3), groups=((1, 2),),
                           mutable=torch.tensor([True, False, False]))
    assert torch.equal(frozen.project(torch.tensor([[0.7, 0.2, 0.9]]), x), torch.tensor([[0.7, 1.0, 0.0]]))
