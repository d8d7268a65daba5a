"""Two identical evaluations started together share one run and compute each batch once (claims)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import evaluate
from bastion.store import Store

WORKER = Path(__file__).parent / "claims_worker.py"


def _config(checkpoint: Path) -> EvalConfig:
    sys.path.insert(0, str(WORKER.parent))
    from claims_worker import CONFIG

    return EvalConfig(model=str(checkpoint), **CONFIG)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shared.sqlite")
    return str(request.getfixturevalue("pg_server").database())


@pytest.fixture(scope="module")
def reference(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same evaluation run alone, in this process: once for both store back ends."""
    return evaluate(_config(digits_checkpoint), Store(tmp_path_factory.mktemp("ref") / "ref.sqlite"))


def test_two_identical_commands_split_the_batches(digits_checkpoint: Path, tmp_path: Path, target: str,
                                                  reference) -> None:
    db, go = target, tmp_path / "go"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(db), str(digits_checkpoint), str(log), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for log in logs]
    time.sleep(3.0)  # both imported and waiting
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    run_ids = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(run_ids) == 1, "the two commands made two runs"
    computed = [[int(line) for line in log.read_text().split()] if log.exists() else [] for log in logs]
    assert sorted(computed[0] + computed[1]) == list(range(6)), computed  # every batch once, none twice
    shared = Store(db).get_run(run_ids.pop())
    assert shared.status == "finished" and shared.summary["robust_accuracy"] == reference.summary["robust_accuracy"]
    assert shared.summary["forward_passes"] == reference.summary["forward_passes"]


def test_a_claim_left_by_a_dead_process_is_taken_over(digits_checkpoint: Path, tmp_path: Path) -> None:
    from bastion.evaluation.resolve import prepare

    store = Store(tmp_path / "s.sqlite")
    config = _config(digits_checkpoint)
    full = prepare(config).config  # the run's own config (the data set filled in), so the job finds this run
    run_id = store.open_run("evaluate", full.key(), full.model_dump(mode="json"), full.seed, {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "gone", "at": time.time()}
    assert store.claim(run_id, "claim/0", holder)
    outcome = evaluate(config, store)  # would wait forever if the dead holder kept batch 0
    assert outcome.run_id == run_id and 0 in store.done_batches(run_id, "pgd")
