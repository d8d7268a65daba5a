"""Each detector against closed-form cases, and the issue's acceptance test: the detectors flag a synthetic
Jacobian-augmentation client and not a client that sends natural test data.

The acceptance test runs on held-out streams, none of which chose a default: JBDA from MNIST training images
1000:1100 and T-RND from 2000:2100 (the defaults were chosen on JBDA from 0:100 and on MNIST training images as
honest clients), and MNIST test images shuffled and in file order. The context is the defender's 1,000 MNIST
validation points, the size a ``bastion steal`` run gives it."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from scipy import sparse
from tests.stealing.streams import jbda_stream, trnd_stream
from torch import nn

from bastion.data import load_dataset
from bastion.errors import InvalidInputError
from bastion.stealing import DETECTORS, DefenseContext, VictimSpec
from bastion.stealing.metrics import first_flag

SPEC = VictimSpec((1, 28, 28), 10)
ROUNDS = 4  # 100 seeds -> 1,600 queries
NATURAL = 5000  # MNIST test images per honest client
THIEVES, HONEST = ("jbda", "t-rnd"), ("natural-shuffled", "natural-in-order")


class Constant(nn.Module):
    """A 'victim' that predicts class 0 for everything."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 2)
        out[:, 0] = 1.0
        return out


def make(name: str, ctx: DefenseContext, **params):
    return DETECTORS.get(name).fn(ctx, **params)


@pytest.fixture(scope="module")
def ctx(data, victim) -> DefenseContext:
    return DefenseContext(data.val.x, data.val.y, SPEC, torch.Generator().manual_seed(0), victim=victim)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def streams(victim, mnist) -> dict[str, torch.Tensor]:
    order = torch.randperm(mnist.test.x.shape[0], generator=torch.Generator().manual_seed(0))
    return {"jbda": jbda_stream(victim, mnist.train.x[1000:1100], ROUNDS, generator_seed=1),
            "t-rnd": trnd_stream(victim, mnist.train.x[2000:2100], ROUNDS, generator_seed=2),
            "natural-shuffled": mnist.test.x[order[:NATURAL]], "natural-in-order": mnist.test.x[:NATURAL]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the detectors run many small tensor operations, one query at a time: on a shared machine, threads only wait
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def honest_queries(name: str) -> int:
    # PRADA runs a Shapiro-Wilk test after every query, so its time grows with the square of a client's length:
    # it sees the first 2,000 here (bench/steal_defense_cost.py runs it on 5,000 in file order)
    return 2000 if name == "prada" else NATURAL


@pytest.fixture(scope="module")
def flags(ctx, streams) -> dict[str, dict[str, int | None]]:
    """Queries to the first flag of each detector (defaults) on each stream (None: never)."""
    return {name: {s: first_flag(make(name, ctx), x if s in THIEVES else x[:honest_queries(name)])
                   for s, x in streams.items()} for name in DETECTORS.names()}


# the acceptance test: flag each thief within its 1,600 queries, no honest client within 5,000 (PRADA: 2,000) ------
# Blacklight does not meet it on MNIST (see its module docstring); its row records what it does.
BLACKLIGHT = {"jbda": True, "t-rnd": False, "natural-shuffled": True, "natural-in-order": True}


@pytest.mark.parametrize("name", ["prada", "stateful-knn"])
def test_detector_flags_the_thieves_and_no_honest_client(name, flags, streams) -> None:
    got = flags[name]
    assert all(got[s] is not None and got[s] <= streams[s].shape[0] for s in THIEVES), got
    assert all(got[s] is None for s in HONEST), got


def test_stateful_knn_flags_a_thief_in_its_first_augmentation_round(flags) -> None:
    # k = 1 sees each synthetic query's parent, so the votes come from the first round (queries 101 to 200)
    assert all(100 < flags["stateful-knn"][s] <= 200 for s in THIEVES), flags["stateful-knn"]


def test_blacklight_outcome_on_mnist(flags) -> None:
    assert {s: f is not None for s, f in flags["blacklight"].items()} == BLACKLIGHT, flags["blacklight"]


def test_blacklight_does_not_see_a_jbda_step(ctx, streams) -> None:
    det = make("blacklight", ctx)
    jbda, natural = streams["jbda"], streams["natural-shuffled"]

    def shared(a: torch.Tensor, b: torch.Tensor) -> list[int]:
        return [len(set(x.tolist()) & set(y.tolist())) for x, y in zip(det.fingerprint(a), det.fingerprint(b),
                                                                         strict=True)]

    parent_child = statistics.median(shared(jbda[:100], jbda[100:200]))  # a seed and its first-round child
    unrelated = statistics.median(shared(natural[:100], natural[100:200]))  # two natural test images
    assert parent_child < unrelated and parent_child < 5


def test_blacklight_paper_threshold_false_alarm_is_a_near_duplicate_pair_of_ones(ctx, streams, mnist) -> None:
    # why the paper's fixed threshold fails on MNIST: an honest client sending test images in file order
    natural, jbda = streams["natural-in-order"][:2000], streams["jbda"]
    det = make("blacklight", ctx, threshold=25)
    flagged = first_flag(det, natural) - 1
    fingerprints = det.fingerprint(natural[:flagged + 1])
    shared = [len(set(fingerprints[flagged].tolist()) & set(f.tolist())) for f in fingerprints[:flagged]]
    match = max(range(flagged), key=shared.__getitem__)
    labels = mnist.test.y
    step = (jbda[100:200] - jbda[:100]).flatten(1).norm(dim=1).median()  # a JBDA parent-child distance
    assert shared[match] >= 25 and int(labels[flagged]) == int(labels[match]) == 1
    assert float((natural[flagged] - natural[match]).norm()) < float(step)


def _best_matches(det, x: torch.Tensor) -> list[int]:
    """Each point's most hashes shared with one earlier point: every pair's count, from a point-by-hash matrix."""
    prints = det.fingerprint(x)
    _, columns = np.unique(np.concatenate(prints), return_inverse=True)
    rows = np.repeat(np.arange(len(prints)), [len(p) for p in prints])
    member = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)))
    shared = np.tril((member @ member.T).toarray(), k=-1)  # shared[i, j]: hashes of i also in j < i
    return shared.max(axis=1).astype(int).tolist()


def test_blacklight_calibrates_on_the_defenders_data(ctx) -> None:
    det = make("blacklight", ctx)
    assert det.threshold == max(25, max(_best_matches(det, ctx.data)) + 1)  # fpr = 0: above every defender point
    assert make("blacklight", ctx, threshold=25).threshold == 25  # an explicit threshold is kept


def test_blacklight_calibration_allows_fpr_of_the_defenders_points(ctx) -> None:
    x = torch.cat([ctx.data[:300], ctx.data[:3]])  # three exact copies: they share all 50 hashes
    copies = DefenseContext(x, torch.zeros(303), SPEC, torch.Generator().manual_seed(0))
    best = _best_matches(make("blacklight", copies, threshold=25), x)
    assert make("blacklight", copies).threshold == 50  # fpr = 0 cannot clear the copies: capped at top
    loose = make("blacklight", copies, fpr=0.01).threshold  # 3 of 303 may reach it: the copies
    assert loose < 50 and sum(b >= loose for b in best) <= 3
    assert loose == 25 or sum(b >= loose - 1 for b in best) > 3  # and it is the smallest such count


def test_blacklight_threshold_is_never_below_the_papers() -> None:
    noise = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    spread = DefenseContext(noise, torch.zeros(30), SPEC, torch.Generator().manual_seed(0))
    assert make("blacklight", spread).threshold == 25  # noise shares few hashes: the paper's 25 stays


# stateful kNN at the paper's settings, for the record ------------------------------------------------------------
PAPER_KNN = {"k": 50, "fpr": 0.001, "window": 1, "votes": 1, "history": 10**9}


def test_stateful_knn_paper_settings_fail_on_mnist(victim, ctx, streams, mnist) -> None:
    # calibrated on the defender's 1,000 points, the paper's single-query rule flags an honest client ...
    assert first_flag(make("stateful-knn", ctx, **PAPER_KNN), streams["natural-in-order"]) is not None
    # ... and calibrated on 3,000 it already misses the thief: k = 50 earlier queries reach past a JBDA family
    # (16 members after 4 rounds) to ordinary neighbours
    val = mnist.val.take(3000)
    more = DefenseContext(val.x, val.y, SPEC, torch.Generator().manual_seed(0), victim=victim)
    assert first_flag(make("stateful-knn", more, **PAPER_KNN), streams["jbda"]) is None


# PRADA -----------------------------------------------------------------------------------------------------------
def _one_d(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1)


def test_prada_growing_set_follows_the_paper() -> None:
    ctx = DefenseContext(torch.zeros(1, 1), torch.zeros(1), VictimSpec((1,), 2), torch.Generator(),
                         victim=Constant())
    det = make("prada", ctx)
    det.observe(_one_d([0.0, 3.0, 4.0, 4.05]))
    g = det.sets[0]
    # 0 starts the set; 3 (d=3) and 4 (d=1) join; T = mean - std of [0, 3, 1] = 4/3 - 1.2472 = 0.0861;
    # 4.05 (d=0.05 < T) does not join
    assert g.members.flatten().tolist() == [0.0, 3.0, 4.0]
    assert g.threshold == pytest.approx(4 / 3 - (((16 / 9) + (25 / 9) + (1 / 9)) / 3) ** 0.5)
    assert det.dists[0] == pytest.approx([3.0, 1.0, 0.05], abs=1e-6)


def test_prada_waits_for_enough_distances_and_tests_normality() -> None:
    ctx = DefenseContext(torch.zeros(1, 1), torch.zeros(1), VictimSpec((50,), 2), torch.Generator(),
                         victim=Constant())
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(400, 50, generator=g)  # a Gaussian cloud: nearest-neighbour distances near normal
    det = make("prada", ctx)
    flags = det.observe(spread)
    assert not bool(flags[:101].any())  # no test before more than 100 distances
    assert det.last_w is not None and det.last_w > 0.96 and not bool(flags.any())
    steps = torch.cat([spread[:150], spread[:150] + 1e-3])  # then near-copies of earlier queries
    thief = make("prada", ctx)
    assert bool(thief.observe(steps).any()) and thief.last_w < 0.96


def test_prada_needs_the_victim(data) -> None:
    with pytest.raises(InvalidInputError, match="victim=<the deployed model>"):
        make("prada", DefenseContext(data.val.x, data.val.y, SPEC, torch.Generator()))


# stateful kNN ----------------------------------------------------------------------------------------------------
def _line_context() -> DefenseContext:
    line = torch.arange(20.0).view(-1, 1)  # benign points 1 apart: interior 2-NN mean 1, ends 1.5; 1-NN all 1
    return DefenseContext(line, torch.zeros(20), VictimSpec((1,), 2), torch.Generator())


def test_stateful_knn_threshold_and_detection_in_closed_form() -> None:
    ctx, single = _line_context(), {"window": 1, "votes": 1}  # the paper's rule: one query below the threshold
    det = make("stateful-knn", ctx, k=2, fpr=0.0, **single)
    assert det.threshold == pytest.approx(1.0)
    assert first_flag(det, _one_d([0.0, 0.5, 1.0, 1.5])) == 3  # 2 earlier at 0.5 and 1.0: mean 0.75 < 1
    assert first_flag(make("stateful-knn", ctx, k=2, fpr=0.0, **single), _one_d([0.0, 2.0, 4.0, 6.0])) is None


def test_stateful_knn_votes_within_a_window() -> None:
    # k = 1, threshold 1 (every benign 1-NN distance is 1): a query within 0.5 of an earlier one is a hit
    ctx = _line_context()
    far = [0.0, 0.5, 10.0, 20.0, 30.0, 40.0, 40.5]  # hits at queries 2 and 7: 5 apart, not 2 within 4
    assert first_flag(make("stateful-knn", ctx, k=1, fpr=0.0, window=4, votes=2), _one_d(far)) is None
    near = [*far, 50.0, 50.5]  # hits at 7 and 9: 2 within the last 4
    assert first_flag(make("stateful-knn", ctx, k=1, fpr=0.0, window=4, votes=2), _one_d(near)) == 9
    assert first_flag(make("stateful-knn", ctx, k=1, fpr=0.0, window=4, votes=2), _one_d(near), 1) == 9


def test_stateful_knn_history_is_bounded() -> None:
    ctx, single = _line_context(), {"k": 1, "fpr": 0.0, "window": 1, "votes": 1}
    assert make("stateful-knn", ctx).history == 19  # default: the defender's points less one
    back = _one_d([0.0, 10.0, 20.0, 0.5])  # 0.5 is close to the query three back only
    assert first_flag(make("stateful-knn", ctx, history=2, **single), back) is None
    assert first_flag(make("stateful-knn", ctx, history=3, **single), back) == 4


def test_stateful_knn_rejects_bad_settings() -> None:
    ctx = _line_context()
    for bad in ({"votes": 21}, {"votes": 0}, {"k": 3, "history": 2}, {"k": 20}, {"fpr": 1.0}):
        with pytest.raises(InvalidInputError, match="stateful-knn"):
            make("stateful-knn", ctx, **bad)


def test_stateful_knn_projection_keeps_distances(ctx, data) -> None:
    det = make("stateful-knn", ctx, dim=256)
    x = data.test.x[:50]
    raw, proj = torch.pdist(x.flatten(1)), torch.pdist(det.encode(x))
    ratio = proj / raw
    assert 0.95 < float(ratio.median()) < 1.05 and float(ratio.min()) > 0.7


# Blacklight ------------------------------------------------------------------------------------------------------
def test_blacklight_flags_copies_and_near_copies(ctx, data) -> None:
    x = data.test.x[:1]
    near = x.clone()
    near[0, 0, 14, 14] = 1.0 - near[0, 0, 14, 14]  # one pixel: at most 20 of 765 windows change
    det = make("blacklight", ctx)
    assert det.observe(data.test.x[1:3]).tolist() == [False, False]
    assert det.observe(x).tolist() == [False]
    assert det.observe(near).tolist() == [True]
    assert det.best_match(det.fingerprint(x)[0]) == 50


def test_blacklight_hashes_window_content(ctx, data) -> None:
    x = data.test.x[:1].flatten(1)
    shifted = torch.roll(x, 1, dims=1)  # every window reappears one position later
    plain = make("blacklight", ctx, salt=False, threshold=25)
    a, b = plain.fingerprint(x.view(1, 1, 28, 28))[0], plain.fingerprint(shifted.view(1, 1, 28, 28))[0]
    assert len(set(a.tolist()) & set(b.tolist())) >= 45
    salted = make("blacklight", ctx, threshold=25)  # the salt makes a window's hash depend on where it is
    a, b = salted.fingerprint(x.view(1, 1, 28, 28))[0], salted.fingerprint(shifted.view(1, 1, 28, 28))[0]
    assert len(set(a.tolist()) & set(b.tolist())) < 25
