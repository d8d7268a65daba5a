"""`bastion steal` end to end: the stored curves and report, a killed run that resumes without asking the victim again,
and a remote target that stops answering (the copy and curve so far are kept)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from torch import Tensor, nn

from bastion.blackbox.http import serve_model
from bastion.errors import BastionError
from bastion.stealing import run as run_mod
from bastion.stealing.api import steal
from bastion.stealing.config import parse_steal
from bastion.store import Store

SMALL = {"name": "small", "budget": 400, "checkpoints": [200], "test_size": 100, "val_size": 100, "pool_size": 1000,
         "thief": {"epochs": 2, "min_steps": 20, "arch_kwargs": {"width": 4, "hidden": 32}},
         "attacks": [{"name": "knockoff-random", "params": {"batch_size": 100}}],
         "benign_clients": 2, "benign_queries": 50, "transfer": {"points": 50}}


class Counting(nn.Module):
    """Counts the inputs it answers; raises ``error`` once more than ``limit`` were asked."""

    def __init__(self, model: nn.Module, limit: int | None = None, error: type[BaseException] = RuntimeError) -> None:
        super().__init__()
        self.model, self.limit, self.error, self.asked = model, limit, error, 0

    def forward(self, x: Tensor) -> Tensor:
        self.asked += x.shape[0]
        if self.limit is not None and self.asked > self.limit:
            raise self.error("the victim went away")
        return self.model(x)


def test_run_stores_the_curve_and_writes_the_report(tmp_path: Path) -> None:
    report = steal(SMALL, store=tmp_path / "s.sqlite", report_dir=tmp_path / "r")
    c = report.cell("knockoff-random")
    assert [p["queries"] for p in c["curve"]] == [200, 400]
    assert c["queries"] == 400 and c["answers"] == "probs" and not c["fell_back_to_labels"]
    assert 0 < c["curve"][-1]["fidelity"] <= 1 and c["fidelity"] == pytest.approx(c["curve"][-1]["fidelity"])
    assert 0 <= c["transfer"]["success_rate"] <= 1
    assert report.summary["defense_runs"]["none"]["accuracy_loss"] == 0
    for name in ("html", "markdown", "json", "curves"):
        assert report.files[name].stat().st_size > 0
    assert "knockoff-random: fidelity" in report.to_markdown()


def test_a_killed_run_resumes_without_asking_the_victim_again(tmp_path: Path, monkeypatch) -> None:
    config, store = parse_steal(SMALL), Store(tmp_path / "s.sqlite")
    real = run_mod.deployed
    dying = {}

    def deploy_dying(cfg, world, defense):  # the process dies (Ctrl-C) after the first checkpoint
        dying["m"] = Counting(real(cfg, world, defense), limit=300, error=KeyboardInterrupt)
        return dying["m"]

    monkeypatch.setattr(run_mod, "deployed", deploy_dying)
    with pytest.raises(KeyboardInterrupt):
        run_mod.run_steal(config, store, tmp_path / "w")
    counted = {}

    def deploy_counted(cfg, world, defense):
        counted["m"] = Counting(real(cfg, world, defense))
        return counted["m"]

    monkeypatch.setattr(run_mod, "deployed", deploy_counted)
    result = run_mod.run_steal(config, store, tmp_path / "w")
    cell = store.get_run(result.cells[("knockoff-random", "none")])
    assert cell.summary["replayed_queries"] == 200 and not cell.summary["replay_diverged"]
    # the cell asked only the 200 unanswered queries (plus the transfer check: 2 per point)
    assert counted["m"].asked == 200 + 2 * 50
    assert [m["step"] for m in store.metrics(cell.id, "fidelity")] == [200, 400]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_target_that_stops_answering_keeps_the_copy_and_the_curve(tmp_path: Path, victim: nn.Module) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/predict"
    config = {**SMALL, "target": url, "transfer": {"points": 0}}
    # the world asks the test split once (100); the honest-user check asks it again (100); then the thief
    with serve_model(Counting(victim, limit=200 + 300), port=port), \
            pytest.raises(BastionError, match=r"stopped answering after 200 of 400 queries"):
        steal(config, store=tmp_path / "s.sqlite", workdir=tmp_path / "w")
    store = Store(tmp_path / "s.sqlite")
    stopped = [r for r in store.list_runs() if r.kind == "steal-cell"]
    assert len(stopped) == 1 and stopped[0].status == "stopped"
    assert [m["step"] for m in store.metrics(stopped[0].id, "fidelity")] == [200]
    assert list((tmp_path / "w" / "cells").glob("*/copy.safetensors"))
    # the server is back: the run resumes, replaying the 200 answers it had
    healthy = Counting(victim)
    run_mod._WORLDS.clear()  # as a new process would
    with serve_model(healthy, port=port):
        report = steal(config, store=tmp_path / "s.sqlite", workdir=tmp_path / "w")
    c = report.cell("knockoff-random")
    assert c["replayed_queries"] == 200 and [p["queries"] for p in c["curve"]] == [200, 400]
    assert healthy.asked == 100 + 200  # the world's test labels, then only the unanswered queries


def test_a_users_own_model_is_a_victim_from_the_command_line(tmp_path: Path) -> None:
    import yaml
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from bastion.cli import app

    (tmp_path / "mine.py").write_text("from torch import nn\n\ndef make():\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    save_file(linear.state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**SMALL, "budget": 200, "checkpoints": []}))
    result = CliRunner().invoke(app, ["steal", "run", str(tmp_path / "c.yaml"), "--victim",
                                      f"{tmp_path / 'mine.py'}:make", "--weights", str(tmp_path / "w.safetensors"),
                                      "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "r")],
                                 env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    summary = Store(tmp_path / "s.sqlite").get_run(result.output.split("steal run ")[1].split()[0]).summary
    assert summary["victim"].endswith("mine.py:make") and (tmp_path / "r" / "steal.html").exists()


def test_a_pool_of_smaller_images_is_refused_or_resized() -> None:
    from bastion.errors import InvalidInputError

    spec = run_mod.VictimSpec((1, 28, 28), 10)
    with pytest.raises(InvalidInputError, match="set `pool_resize: true` to resize its images"):
        run_mod._pool(parse_steal({**SMALL, "pool": "digits"}), spec)
    pool, labels = run_mod._pool(parse_steal({**SMALL, "pool": "digits", "pool_resize": True}), spec)
    assert pool.shape[1:] == (1, 28, 28) and len(pool) == len(labels)
    assert 0 <= float(pool.min()) <= float(pool.max()) <= 1


def test_each_defense_is_built_once_per_run(tmp_path: Path, monkeypatch) -> None:
    built = []
    run_mod._WORLDS.clear()  # as a new process would
    run_mod._DEPLOYED.clear()
    real = run_mod._build_defense
    monkeypatch.setattr(run_mod, "_build_defense", lambda c, w, d: built.append(d.name) or real(c, w, d))
    config = {**SMALL, "budget": 100, "checkpoints": [], "transfer": {"points": 0}, "benign_clients": 0,
              "attacks": [{"name": "knockoff-random"}, {"name": "copycat"}],
              "defenses": [{"name": "none"}, {"name": "top1"}]}
    report = steal(config, store=tmp_path / "s.sqlite")
    assert built == ["top1"] and report.cell("copycat", "top1")["answers"] == "labels"
