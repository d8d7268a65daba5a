"""A run killed (SIGKILL) after an epoch and resumed from its state file ends where an uninterrupted run does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from adv_helpers import EPS, toy, toy_model

from bastion.defenses.training import Event, Recipe, train_epochs

RECIPE = Recipe(defense="fast-at", dataset="toy", eps=EPS, epochs=3, batch_size=64, lr=3e-2, val_size=64,
                check_size=64, val_steps=3, ema_decay=0.9, schedule="auto", method={"guard": "none"}, seed=3)
CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from pathlib import Path
from adv_helpers import toy, toy_model
from test_adv_resume import RECIPE
from bastion.defenses.training import train_epochs
slow = lambda e: time.sleep(0.05) if e.kind == "batch" and e.epoch >= 1 else None
train_epochs(toy_model(), toy(320, 0), toy(64, 1), RECIPE, state_path=Path(sys.argv[1]), on_event=slow)
"""


def _run(state: Path | None, on_event=None) -> dict[str, torch.Tensor]:
    model, _ = train_epochs(toy_model(), toy(320, 0), toy(64, 1), RECIPE, state_path=state, on_event=on_event)
    return model.state_dict()


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    state = tmp_path / "run.state.pt"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(state)], env=env)
    deadline = time.time() + 60
    while not state.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert state.exists(), "the child should have saved its state after the first epoch"
    saved = torch.load(state, weights_only=False)["run"]["epoch"]
    assert 1 <= saved < RECIPE.epochs, "killed in the middle of the run"
    epochs_seen: list[int] = []
    resumed = _run(state, lambda e: epochs_seen.append(e.epoch) if e.kind == "epoch" else None)
    assert epochs_seen and epochs_seen[0] == saved, "training continued from the saved epoch"
    straight = _run(None)
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_in_process_interrupt_then_resume(tmp_path: Path) -> None:
    state = tmp_path / "b.state.pt"

    def stop(e: Event) -> None:
        if e.kind == "batch" and e.epoch == 2 and e.batch == 1:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        _run(state, stop)
    assert torch.load(state, weights_only=False)["run"]["epoch"] == 2
    resumed, straight = _run(state), _run(None)
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
