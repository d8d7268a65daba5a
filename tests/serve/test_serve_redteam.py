"""``bastion attack --target URL --api-key K`` against the service, and a ``kill -9`` in the middle of writes."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tests.serve.conftest import Server, call, mnist_inputs, new_key
from typer.testing import CliRunner

from bastion.cli import app


def _audit_matches_budgets(db: Path) -> dict[str, int]:
    """Every key's ``spent`` equals the queries its ``allow`` audit rows charged; returns spent by key."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        spent = dict(conn.execute("SELECT id, spent FROM keys").fetchall())
        audited = dict(conn.execute("SELECT key_id, SUM(n) FROM audit WHERE decision = 'allow' GROUP BY key_id")
                       .fetchall())
    assert spent == {k: audited.get(k, 0) for k in spent}
    return spent


def test_bastion_attack_runs_against_the_service_with_a_key(server: Server, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_API_KEY", "")  # restored after the test: the CLI sets it from --api-key
    key = new_key(server.db, "redteam")
    args = ["attack", "square", "--target", server.url + "/predict", "--dataset", "mnist", "--n", "2", "--eps",
            "0.3", "--max-queries", "10", "--batch-size", "2", "--store", str(tmp_path / "runs.db")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "401" in refused.output
    result = CliRunner().invoke(app, [*args, "--api-key", key])
    assert result.exit_code == 0, result.output
    sent = re.search(r"queries sent to the endpoint [^|]*\| (\d+) \|", " ".join(result.output.split()))
    assert sent is not None, result.output
    # every input the client sent (probe, clean check, attack, re-check) was charged to this key, no more
    assert _audit_matches_budgets(server.db)[key.split("_")[1]] == int(sent.group(1)) > 0
    with sqlite3.connect(tmp_path / "runs.db") as runs:
        assert key not in "\n".join(runs.iterdump())  # the key is never part of the run's record


def test_kill_9_during_writes_leaves_audit_and_budgets_consistent(tmp_path: Path) -> None:
    server = Server(tmp_path / "serve.db", ["mnist-cnn"]).start()
    keys = [new_key(server.db, f"k{i}", budget=100_000, rate=10_000.0, burst=1000.0) for i in range(3)]
    answered = dict.fromkeys(keys, 0)
    stop = threading.Event()

    def hammer(key: str) -> None:
        while not stop.is_set():
            try:
                if call(server.url + "/predict", mnist_inputs(2), key, timeout=5)[0] == 200:
                    answered[key] += 2
            except OSError:
                return

    threads = [threading.Thread(target=hammer, args=(k,)) for k in keys for _ in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while sum(answered.values()) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    spent = _audit_matches_budgets(server.db)
    for key in keys:  # every answer was charged first; a charge whose answer was cut off counts too
        assert answered[key] <= spent[key.split("_")[1]]
    assert sum(answered.values()) >= 60
    server.start()
    try:
        assert call(server.url + "/predict", mnist_inputs(3), keys[0])[0] == 200
        after = _audit_matches_budgets(server.db)
        assert after[keys[0].split("_")[1]] == spent[keys[0].split("_")[1]] + 3
    finally:
        server.stop()
