"""Several processes on one store: two writers at once, and a writer SIGKILLed in the middle of a batch.
Each test runs on SQLite and on a real PostgreSQL server (tests/pgserver.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.store_worker import BATCHES, ROWS

import bastion
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import evaluate
from bastion.store import Store

WORKER = Path(__file__).parent / "store_worker.py"


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return str(request.getfixturevalue("pg_server").database())


def _worker(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(bastion.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_writers_at_once(target: str, tmp_path: Path) -> None:
    store = Store(target)
    own = [store.create_run("evaluate", f"k{i}", {}, 0, {}) for i in range(2)]
    shared = store.create_run("evaluate", "shared", {}, 0, {})
    go = tmp_path / "go"
    procs = [_worker("write", target, run_id, shared, str(go)) for run_id in own]
    assert all(p.stdout is not None and p.stdout.readline().strip() == "ready" for p in procs)
    go.touch()  # both have the store open: they start writing together
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for run_id in [*own, shared]:
        assert store.done_batches(run_id, "pgd") == set(range(BATCHES))
        rows = store.samples(run_id)
        assert [r["idx"] for r in rows] == list(range(BATCHES * ROWS))
        assert store.batch_totals(run_id, "pgd")["seconds"] == 0.5 * BATCHES
        assert len(store.metrics(run_id, "loss")) == BATCHES
    assert len(store.metrics(shared, "writer")) == 2 * BATCHES  # tagged by writer: both writers' rows are there
    store.close()


def test_writer_killed_mid_batch_leaves_no_partial_batch(target: str, digits_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    config = EvalConfig(model=str(digits_checkpoint), n=96, batch_size=32, eps=0.1, suite=None, attack="pgd",
                        params={"steps": 10}, seed=5)
    reference = evaluate(config, Store(tmp_path / "ref.sqlite"))
    proc = _worker("evaluate", target, str(digits_checkpoint))
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "paused", proc.stderr.read() if proc.stderr else ""
        store = Store(target)
        run_id = store.list_runs()[0].id
        assert len(store.samples(run_id)) == 32  # batch 1's samples are written but not committed: not visible
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = Store(target)
    assert store.done_batches(run_id, "pgd") == {0}
    assert [r["idx"] for r in store.samples(run_id)] == list(range(32))  # no partial batch after the kill
    assert store.get_run(run_id).status == "running"
    resumed = evaluate(config, store)
    assert resumed.run_id == run_id and resumed.resumed_points == 32
    assert resumed.summary["robust_accuracy"] == reference.summary["robust_accuracy"]
    assert resumed.summary["forward_passes"] == reference.summary["forward_passes"]
    ref_rows = Store(tmp_path / "ref.sqlite").samples(reference.run_id)
    strip = [{k: v for k, v in r.items() if k != "run_id"} for r in ref_rows]
    assert strip == [{k: v for k, v in r.items() if k != "run_id"} for r in store.samples(run_id)]
    store.close()
