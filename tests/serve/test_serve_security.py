"""Keys, budgets, rate limits and output hardening against a real ``bastion serve`` process."""

from __future__ import annotations

import sqlite3
import time

import torch
from tests.serve.conftest import Server, call, mnist_inputs, new_key
from typer.testing import CliRunner

from bastion.cli import app


def test_no_key_is_401_a_wrong_key_401_and_a_revoked_key_403(server: Server) -> None:
    url = server.url + "/predict"
    status, answer, _ = call(url, mnist_inputs(1))
    assert status == 401 and "X-API-Key" in answer["error"]
    key = new_key(server.db)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert call(url, mnist_inputs(1), forged)[0] == 401
    assert call(url, mnist_inputs(1), key)[0] == 200
    result = CliRunner().invoke(app, ["serve", "keys", "revoke", key.split("_")[1], "--db", str(server.db)])
    assert result.exit_code == 0, result.output
    status, answer, _ = call(url, mnist_inputs(1), key)
    assert status == 403 and "revoked" in answer["error"]


def test_keys_are_stored_only_as_salted_hashes(server: Server) -> None:
    key = new_key(server.db, "hashed")
    secret = key.split("_", 2)[2]
    with sqlite3.connect(server.db) as db:
        rows = db.execute("SELECT salt, hash FROM keys").fetchall()
        dump = "\n".join(db.iterdump())
    assert secret not in dump and key not in dump
    assert len({salt for salt, _ in rows}) == len(rows)  # one salt per key


def test_a_spent_budget_is_429_with_the_reset_time_and_survives_a_restart(server: Server) -> None:
    url = server.url + "/predict"
    before = time.time()
    key = new_key(server.db, "budget", budget=5, period_s=3600.0)
    assert call(url, mnist_inputs(3), key)[0] == 200
    server.stop()
    server.start()
    status, answer, headers = call(url, mnist_inputs(3), key)
    assert status == 429 and "budget spent (3 of 5)" in answer["error"] and "resets at" in answer["error"]
    assert before + 3600 <= answer["reset_at"] <= time.time() + 3600
    assert 3500 < int(headers["retry-after"]) <= 3600
    assert call(url, mnist_inputs(2), key)[0] == 200  # what is left of the budget still answers
    assert call(url, mnist_inputs(1), key)[0] == 429


def test_the_token_bucket_limits_the_rate(server: Server) -> None:
    url = server.url + "/predict"
    key = new_key(server.db, "slow", rate=0.5, burst=4)
    assert call(url, mnist_inputs(4), key)[0] == 200
    status, answer, headers = call(url, mnist_inputs(2), key)
    assert status == 429 and "rate limit" in answer["error"] and int(headers["retry-after"]) >= 1
    status, answer, _ = call(url, mnist_inputs(5), key)
    assert status == 413 and "burst" in answer["error"]


def test_output_hardening_per_key(server: Server) -> None:
    url = server.url + "/predict"
    full = call(url, mnist_inputs(3), new_key(server.db, "full"))[1]["scores"]
    status, answer, _ = call(url, mnist_inputs(3), new_key(server.db, "labels", output="labels"))
    assert status == 200 and set(answer) == {"labels"}
    assert answer["labels"] == torch.tensor(full).argmax(1).tolist()
    answer = call(url, mnist_inputs(3), new_key(server.db, "top2", top_k=2, decimals=2))[1]
    scores = torch.tensor(answer["scores"], dtype=torch.float64)
    probs = torch.tensor(full, dtype=torch.float64).softmax(1)
    assert ((scores > 0).sum(1) <= 2).all()
    top = probs.topk(2, dim=1)
    assert torch.allclose(scores.gather(1, top.indices), top.values.round(decimals=2))
    assert torch.equal(scores, scores.round(decimals=2))


def test_every_decision_is_audited(server: Server) -> None:
    key = new_key(server.db, "audited")
    call(server.url + "/predict", mnist_inputs(2), key)
    call(server.url + "/predict", b"{not json", key)
    with sqlite3.connect(server.db) as db:
        rows = db.execute("SELECT decision, reason, status, n FROM audit WHERE key_id = ? ORDER BY seq",
                          (key.split("_")[1],)).fetchall()
        try:
            db.execute("DELETE FROM audit")
            deleted = True
        except sqlite3.DatabaseError as err:
            deleted, message = False, str(err)
    assert rows == [("allow", "ok", 200, 2), ("deny", "malformed_json", 400, 0)]
    assert not deleted and "append-only" in message
