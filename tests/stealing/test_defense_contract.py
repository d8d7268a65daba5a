"""The contract every registered output defense and detector keeps (on the shipped MNIST victim).

Output defenses: answers of the declared kind (probabilities summing to 1, or int64 labels), the same answers for
the same input, and a batch answered as its rows one by one. Detectors: one bool per query, a fresh state per
client, a flagged client stays flagged, and flags do not depend on how the stream is cut into batches.
"""

from __future__ import annotations

import pytest
import torch
from tests.stealing.streams import shared_jbda_stream

from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, DefenseContext, VictimSpec
from bastion.stealing.metrics import first_flag

DEFENSES = ["adaptive-misinformation", "mad", "reverse-sigmoid", "rounding", "top-k", "top1"]
DETECTOR_NAMES = ["blacklight", "prada", "stateful-knn"]
SPEC = VictimSpec((1, 28, 28), 10)


def test_every_algorithm_is_registered() -> None:
    assert set(DEFENSES) <= set(OUTPUT_DEFENSES.names())
    assert set(DETECTOR_NAMES) <= set(DETECTORS.names())


@pytest.fixture(scope="module")
def ctx(data, victim) -> DefenseContext:
    return DefenseContext(data.val.x, data.val.y, SPEC, torch.Generator().manual_seed(0), victim=victim)


@pytest.fixture(scope="module")
def built(victim, ctx, misinformed) -> dict[str, torch.nn.Module]:
    # adaptive misinformation trains a model: the session's one (same defaults, same defender data) is reused
    return {name: misinformed[0] if name == "adaptive-misinformation" else OUTPUT_DEFENSES.get(name).fn(victim, ctx)
            for name in OUTPUT_DEFENSES.names()}


@pytest.fixture(scope="module")
def queries(data) -> torch.Tensor:
    noise = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return torch.cat([data.test.x[:16], data.pool[:12], noise])


@pytest.mark.parametrize("name", OUTPUT_DEFENSES.names())
def test_defense_answers_its_declared_kind(name, built, queries) -> None:
    spec, module = OUTPUT_DEFENSES.get(name), built[name]
    out = module(queries)
    assert module.answers == spec.answers
    if spec.answers == "labels":
        assert out.shape == (len(queries),) and out.dtype == torch.int64
        assert bool(((out >= 0) & (out < 10)).all())
    else:
        assert out.shape == (len(queries), 10) and bool((out >= 0).all())
        assert torch.allclose(out.sum(1).double(), torch.ones(len(queries), dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("name", OUTPUT_DEFENSES.names())
def test_defense_is_deterministic_and_row_wise(name, built, queries) -> None:
    module = built[name]
    out = module(queries)
    assert torch.equal(out, module(queries))
    rows = torch.cat([module(queries[i:i + 1]) for i in range(len(queries))])
    if out.dtype == torch.int64:
        assert torch.equal(out, rows)
    else:
        assert torch.allclose(out, rows, atol=1e-6)


@pytest.fixture(scope="module")
def streams(victim, data) -> dict[str, torch.Tensor]:
    return {"jbda": shared_jbda_stream(victim, data.seed, 4), "natural": data.test.x[:400]}


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_flags_one_bool_per_query(name, ctx, streams) -> None:
    det = DETECTORS.get(name).fn(ctx)
    assert det.observe(streams["natural"][:0]).shape == (0,)
    out = det.observe(streams["natural"][:7])
    assert out.shape == (7,) and out.dtype == torch.bool


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_state_is_per_client_and_flags_stay(name, ctx, streams) -> None:
    make = DETECTORS.get(name).fn
    alone = make(ctx)
    alone_flags = torch.cat([alone.observe(b) for b in streams["natural"].split(100)])
    thief, honest = make(ctx), make(ctx)
    thief_flags = torch.cat([thief.observe(b) for b in streams["jbda"].split(100)])
    honest_flags = torch.cat([honest.observe(b) for b in streams["natural"].split(100)])
    assert torch.equal(honest_flags, alone_flags)  # the thief's queries did not reach the honest client's state
    for flags in (thief_flags, honest_flags):  # once flagged, flagged
        hits = torch.nonzero(flags)
        assert not hits.numel() or bool(flags[int(hits[0]):].all())


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_flags_do_not_depend_on_batching(name, ctx, streams) -> None:
    make = DETECTORS.get(name).fn
    assert first_flag(make(ctx), streams["jbda"], 100) == first_flag(make(ctx), streams["jbda"], 37)
