"""Extraction monitoring in the service (``bastion serve --monitor prada``) and per-key output defenses, against a
real server process: a JBDA thief is flagged at the query the detector flags it in-process, then blocked (also
after a restart), throttled or only reported, by its key's ``--on-alarm``; an honest key sending as many natural
MNIST test images is never flagged."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.serve.conftest import Server, call, new_key
from tests.stealing.streams import jbda_stream
from torch import Tensor
from typer.testing import CliRunner

from bastion.cli import app
from bastion.data import load_dataset
from bastion.serve.keys import KeyStore
from bastion.stealing import DETECTORS, DefenseContext, VictimSpec, load_algorithms
from bastion.stealing.defenses.rounding import rounded as rounded_probs
from bastion.zoo import load_model

BATCH = 10  # inputs per request
ROUNDS = 2  # the JBDA thief sends its 100 seed images, then 2 doubling rounds: 400 queries
FAST = {"rate": 10_000.0, "burst": 1000.0}  # no rate limit in the way


@pytest.fixture(scope="module")
def stream() -> Tensor:
    victim = load_model("mnist-cnn")[0].eval()
    return jbda_stream(victim, load_dataset("mnist").train.x[1000:1100], ROUNDS, generator_seed=1)


@pytest.fixture(scope="module")
def flag_at(stream: Tensor) -> int:
    """The query at which PRADA (defaults) first flags the stream, run in this process."""
    load_algorithms()
    victim = load_model("mnist-cnn")[0].eval()
    ctx = DefenseContext(torch.zeros(0), torch.zeros(0), VictimSpec((1, 28, 28), 10), torch.Generator(), victim)
    flags = DETECTORS.get("prada").fn(ctx).observe(stream)
    assert bool(flags.any()), "PRADA should flag the JBDA stream in process"
    return int(flags.int().argmax()) + 1


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mon") / "serve.db", ["mnist-cnn"], "--monitor", "prada").start()
    yield srv
    srv.stop()


def send(server: Server, key: str, x: Tensor) -> list[tuple[int, dict]]:
    """(status, answer) of each request of ``x`` in batches of ``BATCH``, stopping at the first 403."""
    out = []
    for i in range(0, x.shape[0], BATCH):
        part = x[i:i + BATCH]
        status, body, _ = call(server.url + "/predict", {"inputs": part.tolist(), "shape": list(part.shape)}, key)
        out.append((status, body))
        if status == 403:
            break
    return out


def alarms(db: Path, key: str) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT reason, status FROM audit WHERE key_id = ? AND decision = 'alarm'",
                            (key.split("_")[1],)).fetchall()


def metric(server: Server, action: str) -> float:
    text = call(server.url + "/metrics", method="GET")[1]
    found = re.search(rf'bastion_serve_alarms_total\{{action="{action}",detector="prada"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_thief_is_blocked_where_the_detector_flags_it_and_stays_blocked(monitored: Server, stream: Tensor,
                                                                         flag_at: int) -> None:
    key = new_key(monitored.db, "thief", on_alarm="block", **FAST)
    answers = send(monitored, key, stream)
    answered = sum(BATCH for status, _ in answers if status == 200)
    # every batch before the one holding the flagged query is answered; that one is refused
    assert answered == (flag_at - 1) // BATCH * BATCH, (answered, flag_at)
    assert answers[-1][0] == 403 and "extraction" in answers[-1][1]["error"]
    assert alarms(monitored.db, key) == [("prada:block", 403)]
    assert metric(monitored, "block") == 1.0
    monitored.stop()
    monitored.start()
    status, body, _ = call(monitored.url + "/predict", {"inputs": stream[:1].tolist(), "shape": [1, 1, 28, 28]}, key)
    assert status == 403 and "blocked" in body["error"]
    with sqlite3.connect(monitored.db) as conn:
        assert conn.execute("SELECT reason FROM audit WHERE key_id = ? ORDER BY seq DESC LIMIT 1",
                            (key.split("_")[1],)).fetchone() == ("blocked_by_detector",)
    # the operator lifts the block after review: audited, and the key is answered again
    lifted = CliRunner().invoke(app, ["serve", "keys", "unblock", key.split("_")[1], "--db", str(monitored.db)])
    assert lifted.exit_code == 0, lifted.output
    status, _, _ = call(monitored.url + "/predict", {"inputs": stream[:1].tolist(), "shape": [1, 1, 28, 28]}, key)
    assert status == 200
    with sqlite3.connect(monitored.db) as conn:
        assert conn.execute("SELECT decision, reason FROM audit WHERE key_id = ? AND decision = 'unblock'",
                            (key.split("_")[1],)).fetchall() == [("unblock", "operator")]
    again = CliRunner().invoke(app, ["serve", "keys", "unblock", key.split("_")[1], "--db", str(monitored.db)])
    assert again.exit_code == 2 and "no blocked or throttled key" in again.output


def test_an_honest_key_is_not_flagged_within_as_many_queries(monitored: Server, stream: Tensor) -> None:
    key = new_key(monitored.db, "honest", on_alarm="block", **FAST)
    natural = load_dataset("mnist").test.x[:stream.shape[0]]
    answers = send(monitored, key, natural)
    assert [s for s, _ in answers] == [200] * (stream.shape[0] // BATCH)
    assert alarms(monitored.db, key) == []


def test_alert_reports_and_throttle_cuts_the_rate(monitored: Server, stream: Tensor, flag_at: int) -> None:
    alert = new_key(monitored.db, "alert", on_alarm="alert", **FAST)
    before = metric(monitored, "alert")
    assert all(s == 200 for s, _ in send(monitored, alert, stream))  # alert only: the key keeps being answered
    assert alarms(monitored.db, alert) == [("prada:alert", 200)]
    assert metric(monitored, "alert") == before + 1
    slow = new_key(monitored.db, "slow", on_alarm="throttle", rate=1000.0, burst=500.0)
    send(monitored, slow, stream[:flag_at + BATCH])
    assert alarms(monitored.db, slow) == [("prada:throttle", 200)]
    with sqlite3.connect(monitored.db) as conn:
        rate, burst = conn.execute("SELECT rate, burst FROM keys WHERE id = ?", (slow.split("_")[1],)).fetchone()
    assert (rate, burst) == pytest.approx((100.0, 50.0))
    KeyStore(monitored.db).unblock(slow)
    with sqlite3.connect(monitored.db) as conn:
        rate, burst = conn.execute("SELECT rate, burst FROM keys WHERE id = ?", (slow.split("_")[1],)).fetchone()
    assert (rate, burst) == pytest.approx((1000.0, 500.0))


def test_output_defenses_per_key(monitored: Server) -> None:
    x = load_dataset("mnist").test.x[:4]
    body = {"inputs": x.tolist(), "shape": list(x.shape)}
    plain = torch.tensor(call(monitored.url + "/predict", body, new_key(monitored.db, "p", output="probabilities"))[1]
                         ["scores"])
    rounded = torch.tensor(call(monitored.url + "/predict", body,
                                new_key(monitored.db, "r", defense="rounding", defense_params='{"decimals": 1}'))[1]
                           ["scores"])
    assert torch.allclose(rounded.sum(1), torch.ones(4, dtype=rounded.dtype), atol=1e-6)
    assert torch.allclose(rounded, rounded_probs(plain, 1), atol=1e-6)  # Tramèr et al.'s rounding, 1 decimal
    labels = call(monitored.url + "/predict", body, new_key(monitored.db, "t", defense="top1"))[1]
    assert labels == {"labels": plain.argmax(1).tolist()}


def test_keys_create_takes_on_alarm_and_output_defense(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    ok = CliRunner().invoke(app, ["serve", "keys", "create", "a", "--db", db, "--on-alarm", "throttle",
                                  "--output-defense", "top-k", "--defense-param", "k=2"])
    assert ok.exit_code == 0 and ok.output.startswith("bst_"), ok.output
    assert CliRunner().invoke(app, ["serve", "keys", "list", "--db", db]).exit_code == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT on_alarm, defense, defense_params FROM keys").fetchall() == [
            ("throttle", "top-k", '{"k": 2}')]
    for bad in (["--on-alarm", "explode"], ["--output-defense", "mad"], ["--output-defense", "top-k",
                                                                          "--defense-param", "q=1"]):
        result = CliRunner().invoke(app, ["serve", "keys", "create", "b", "--db", db, *bad])
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output


def test_a_database_from_before_monitoring_gets_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the keys table as it was before on_alarm, defense, blocked, throttled
        conn.execute("CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT "
                     "NULL, created REAL NOT NULL, revoked REAL, budget INTEGER NOT NULL, period_s REAL NOT NULL, "
                     "period_start REAL NOT NULL, spent INTEGER NOT NULL DEFAULT 0, rate REAL NOT NULL, burst REAL "
                     "NOT NULL, tokens REAL NOT NULL, refilled REAL NOT NULL, output TEXT NOT NULL DEFAULT 'scores', "
                     "top_k INTEGER, decimals INTEGER)")
        conn.execute("INSERT INTO keys VALUES ('00000000', 'old', x'00', x'00', 0, NULL, 10, 60, 0, 0, 1, 1, 1, 0, "
                     "'labels', NULL, NULL)")
    store = KeyStore(db)
    try:
        old = store.list()[0]
        assert (old["on_alarm"], old["defense"], old["blocked"], old["output"]) == ("alert", None, None, "labels")
        store.alarm("00000000", "block", "prada", "predict")
        assert store.list()[0]["blocked"] is not None
    finally:
        store.close()


def test_monitor_refuses_a_detector_that_needs_benign_data() -> None:
    from bastion.errors import InvalidInputError
    from bastion.serve.model import load_served
    from bastion.serve.monitor import Monitor

    with pytest.raises(InvalidInputError, match="prada"):
        Monitor("stateful-knn", {}, [load_served("mnist-cnn")])
    with pytest.raises(InvalidInputError, match="delta"):
        Monitor("prada", {"delt": 0.9}, [load_served("mnist-cnn")])
