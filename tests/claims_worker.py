"""Subprocess side of tests/test_claims.py: ``python claims_worker.py STORE CHECKPOINT LOG GO_FILE`` waits for
GO_FILE, runs the test's evaluation into STORE, and appends each batch number it computed itself to LOG."""

from __future__ import annotations

import sys
import time
from pathlib import Path

CONFIG = {"n": 96, "batch_size": 16, "eps": 0.1, "suite": None, "attack": "pgd", "params": {"steps": 30}, "seed": 3}


def main(store_url: str, checkpoint: str, log: str, go: str) -> None:
    import bastion.evaluation.job as job
    from bastion.evaluation.config import EvalConfig
    from bastion.store import Store

    real = job._batch

    def logged(store, run_id, setup, plan, b, *rest):
        out = real(store, run_id, setup, plan, b, *rest)
        with open(log, "a") as fh:
            fh.write(f"{b}\n")
        return out

    job._batch = logged
    store = Store(store_url)
    while not Path(go).exists():
        time.sleep(0.01)
    outcome = job.evaluate(EvalConfig(model=checkpoint, **CONFIG), store)
    print(outcome.run_id, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
