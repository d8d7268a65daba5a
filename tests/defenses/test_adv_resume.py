"""A run killed (SIGKILL) after an epoch and resumed from its state file ends where an uninterrupted run does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


# ATTA keeps a perturbation per training point across epochs: the state file must carry it.
ATTA = RECIPE.model_copy(update={"method": {"guard": "none", "init": "prior", "alpha_factor": 0.5}})


def _run(state: Path | None, on_event=None, recipe: Recipe = RECIPE) -> dict[str, torch.Tensor]:
    """The selected (EMA, best-epoch) weights and, under ``raw.``, the last weights trained in place."""
    raw = toy_model()
    model, _ = train_epochs(raw, toy(320, 0), toy(64, 1), recipe, state_path=state, on_event=on_event)
    return model.state_dict() | {f"raw.{k}": v for k, v in raw.state_dict().items()}


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


@pytest.mark.parametrize("recipe", [RECIPE, ATTA], ids=["fgsm-rs", "atta"])
def test_in_process_interrupt_then_resume(tmp_path: Path, recipe: Recipe) -> None:
    state = tmp_path / "b.state.pt"

    def stop(e: Event) -> None:
        if e.kind == "batch" and e.epoch == 2 and e.batch == 1:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        _run(state, stop, recipe)
    saved = torch.load(state, weights_only=False)["run"]
    assert saved["epoch"] == 2
    if recipe is ATTA:
        assert saved["memory"]["seen"].all(), "every training point's perturbation is in the state file"
    resumed, straight = _run(state, recipe=recipe), _run(None, recipe=recipe)
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())
