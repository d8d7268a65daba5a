"""SWA beside EMA: the equal-weight average in closed form, batch-norm statistics recomputed, resume, recipe and CLI."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import yaml
from adv_helpers import EPS, toy, toy_model
from pydantic import ValidationError
from torch import nn
from typer.testing import CliRunner

from bastion.cli import app
from bastion.defenses.training import Event, Recipe, load_recipe, swa_model, swa_update, train_epochs
from bastion.defenses.training.loop import lr_at
from bastion.zoo import load_model

SWA = Recipe(defense="fast-at", dataset="toy", eps=EPS, epochs=4, batch_size=64, lr=3e-2, val_size=64,
             check_size=64, val_steps=3, swa_start=1, swa_lr=1e-2, method={"guard": "none"}, seed=3)


def _bn_net(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def test_average_is_the_mean_of_the_snapshots_and_bn_is_recomputed() -> None:
    snapshots = [_bn_net(seed) for seed in range(3)]
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    average = swa_model(snapshots[0])
    for net in snapshots:
        module = swa_update(average, net, x)
    assert int(average.n_averaged) == 3 and not module.training
    for name, param in module.named_parameters():
        mean = torch.stack([dict(n.named_parameters())[name] for n in snapshots]).mean(0)
        torch.testing.assert_close(param, mean, rtol=0, atol=1e-6)
    with torch.no_grad():  # the statistics of the averaged first layer's outputs on x, not any snapshot's
        hidden = module[0](x)
    torch.testing.assert_close(module[1].running_mean, hidden.mean(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(module[1].running_var, hidden.var(0, unbiased=True), rtol=0, atol=1e-5)
    assert not torch.allclose(module[1].running_mean, snapshots[0][1].running_mean)


def test_loop_averages_the_weights_of_the_epochs_from_swa_start(tmp_path: Path) -> None:
    """The loop's average (in the state file) is the mean of the raw weights at the end of epochs 1, 2 and 3."""
    raw, snapshots = toy_model(), []

    def keep(e: Event) -> None:
        if e.kind == "epoch" and e.epoch >= SWA.swa_start:
            snapshots.append(copy.deepcopy(raw.state_dict()))

    state = tmp_path / "swa.state.pt"
    train_epochs(raw, toy(320, 0), toy(64, 1), SWA, state_path=state, on_event=keep)
    saved = torch.load(state, weights_only=False)["swa"]
    assert len(snapshots) == SWA.epochs - SWA.swa_start and int(saved["n_averaged"]) == len(snapshots)
    for name in snapshots[0]:
        mean = torch.stack([s[name] for s in snapshots]).mean(0)
        torch.testing.assert_close(saved[f"module.{name}"], mean, rtol=0, atol=1e-6)


def test_swa_learning_rate_applies_from_swa_start() -> None:
    assert lr_at(SWA, 0.3, epoch=0) == lr_at(SWA.model_copy(update={"swa_lr": None}), 0.3, epoch=0) != SWA.swa_lr
    assert lr_at(SWA, 0.3, epoch=1) == lr_at(SWA, 0.9, epoch=3) == SWA.swa_lr


def _run(state: Path | None, on_event=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    raw = toy_model()
    model, _ = train_epochs(raw, toy(320, 0), toy(64, 1), SWA, state_path=state, on_event=on_event)
    return model.state_dict() | {f"raw.{k}": v for k, v in raw.state_dict().items()}, (
        torch.load(state, weights_only=False)["swa"] if state is not None else {})


def test_resume_gives_the_same_average_as_an_uninterrupted_run(tmp_path: Path) -> None:
    def stop(e: Event) -> None:
        if e.kind == "batch" and e.epoch == 2 and e.batch == 1:
            raise KeyboardInterrupt

    state = tmp_path / "a.state.pt"
    with contextlib.suppress(KeyboardInterrupt):
        _run(state, stop)
    assert int(torch.load(state, weights_only=False)["swa"]["n_averaged"]) == 1  # epoch 1 is in the average
    resumed, resumed_swa = _run(state)
    straight, straight_swa = _run(tmp_path / "b.state.pt")
    assert resumed_swa.keys() == straight_swa.keys() and int(straight_swa["n_averaged"]) == 3
    assert all(torch.equal(resumed_swa[k], v) for k, v in straight_swa.items())
    assert all(torch.equal(resumed[k], v) for k, v in straight.items())


def test_recipe_round_trips_and_refuses_ema_with_swa(tmp_path: Path) -> None:
    path = tmp_path / "swa.yaml"
    path.write_text(yaml.safe_dump(SWA.model_dump()))
    assert load_recipe(path) == SWA
    assert load_recipe(path, swa_start=2).swa_start == 2
    with pytest.raises(ValidationError, match="choose one weight average"):
        Recipe(defense="pgd-at", ema_decay=0.995, swa_start=5)
    with pytest.raises(ValidationError, match="swa_lr needs swa_start"):
        Recipe(defense="pgd-at", swa_lr=0.01)
    with pytest.raises(ValidationError, match="must be below epochs"):
        Recipe(defense="pgd-at", epochs=3, swa_start=3)


def test_cli_selects_swa_and_refuses_both(tmp_path: Path) -> None:
    out = tmp_path / "digits-swa"
    base = ["adv-train", "--defense", "fast-at", "--dataset", "digits", "--eps", "0.1", "--epochs", "2",
            "--train-subset", "200", "--out", str(out)]
    result = CliRunner().invoke(app, [*base, "--swa-start", "1", "--swa-lr", "0.002"])
    assert result.exit_code == 0, result.output
    _, meta = load_model(str(out.with_suffix(".safetensors")))
    assert meta.recipe["swa_start"] == 1 and meta.recipe["swa_lr"] == 0.002 and meta.recipe["ema_decay"] is None
    both = CliRunner().invoke(app, [*base, "--swa-start", "1", "--ema-decay", "0.99", "--no-resume"])
    assert both.exit_code == 2 and "choose one weight average" in both.output
