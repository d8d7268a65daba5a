"""The key store in-process, on a controlled clock: token bucket refill, budget periods, revocation (closed form)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import InvalidInputError
from bastion.serve import keys as keys_module
from bastion.serve.keys import KeyStore, Policy


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(keys_module.time, "time", c)
    return c


def test_the_bucket_refills_at_its_rate_up_to_its_burst(tmp_path: Path, clock: Clock) -> None:
    store = KeyStore(tmp_path / "k.db")
    key = store.create("a", rate=2.0, burst=10.0, budget=1000)
    assert store.authorize(key, 10, "t").status == 200  # a full bucket
    denied = store.authorize(key, 3, "t")
    assert denied.status == 429 and denied.reason == "rate" and denied.retry_after == pytest.approx(1.5)
    clock.now += 1.5  # 1.5 s at 2/s refills exactly 3
    assert store.authorize(key, 3, "t").status == 200
    clock.now += 100.0  # never more than the burst
    assert store.authorize(key, 10, "t").status == 200
    assert store.authorize(key, 1, "t").status == 429


def test_the_budget_resets_when_its_period_ends(tmp_path: Path, clock: Clock) -> None:
    store = KeyStore(tmp_path / "k.db")
    key = store.create("a", budget=4, period_s=60.0, rate=1000.0, burst=100.0)
    start = clock.now
    assert store.authorize(key, 4, "t").status == 200
    clock.now += 59.0
    denied = store.authorize(key, 1, "t")
    assert denied.status == 429 and denied.reason == "budget" and denied.reset_at == start + 60.0
    assert denied.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    assert store.authorize(key, 4, "t").status == 200
    assert store.list()[0]["spent"] == 4


def test_revocation_and_policies(tmp_path: Path, clock: Clock) -> None:
    store = KeyStore(tmp_path / "k.db")
    key = store.create("a", policy=Policy("labels", None, None))
    assert store.identify(key).policy.output == "labels"
    store.revoke(key)
    assert store.authorize(key, 1, "t").status == 403
    with pytest.raises(InvalidInputError, match="keys list"):
        store.revoke(key)
    with pytest.raises(InvalidInputError, match="--output"):
        store.create("b", policy=Policy("everything"))
    assert store.authorize(None, 1, "t").status == 401
    assert store.authorize("bst_00000000_nope", 1, "t").status == 401
