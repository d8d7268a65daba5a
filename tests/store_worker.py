"""Subprocess side of tests/test_store_concurrency.py (run as a script: python store_worker.py COMMAND ...).

``write URL OWN_RUN SHARED_RUN GO_FILE``: open the store, print ``ready``, wait for GO_FILE, then write 30 batches
of 20 rows into OWN_RUN and the same 30 batches into SHARED_RUN (the other writer writes them too), and metrics.
``evaluate URL CHECKPOINT``: run the store test's PGD evaluation, printing ``paused`` and sleeping inside the
transaction of batch 1 (after its samples, before its batch row), to be SIGKILLed there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

BATCHES, ROWS = 30, 20


def write(url: str, own: str, shared: str, go: str) -> None:
    from bastion.store import Store

    store = Store(url)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    for b in range(BATCHES):
        rows = [(b * ROWS + i, i % 10, i % 10, (i + 1) % 10, 1, i % 2, 0.1 * i, 3, 2) for i in range(ROWS)]
        for run_id in (own, shared):
            store.record_batch(run_id, "pgd", b, b * ROWS, (b + 1) * ROWS, 0.5, rows)
            store.record_metrics(run_id, [("loss", b, 1.0 / (b + 1)), ("writer", b, 1.0, {"run": own})])
    store.close()


def evaluate_and_pause(url: str, checkpoint: str) -> None:
    import bastion.store.store as store_module
    from bastion.evaluation.config import EvalConfig
    from bastion.evaluation.job import evaluate
    from bastion.store import Store

    real = store_module._upsert

    def pause_in_batch_1(conn, table, rows):  # type: ignore[no-untyped-def]
        real(conn, table, rows)
        if table.name == "samples" and rows and rows[0]["idx"] == 32:
            print("paused", flush=True)
            time.sleep(600)

    store_module._upsert = pause_in_batch_1
    config = EvalConfig(model=checkpoint, n=96, batch_size=32, eps=0.1, suite=None, attack="pgd",
                        params={"steps": 10}, seed=5)
    evaluate(config, Store(url))


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    command, *args = sys.argv[1:]
    {"write": write, "evaluate": evaluate_and_pause}[command](*args)
