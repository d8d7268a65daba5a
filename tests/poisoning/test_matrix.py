"""The poisoning matrix: stored, reported, resumable after a kill with nothing recomputed, and its bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import bastion
from bastion.errors import BastionError
from bastion.poisoning.config import load_poison, parse_poison
from bastion.poisoning.matrix import CELL_KIND, Event, run_matrix
from bastion.store import Store

SMALL = {"name": "small", "dataset": "mnist", "train_size": 3000, "val_size": 300, "test_size": 1000,
         "recipe": {"epochs": 1}, "attacks": [{"name": "none"}, {"name": "badnets", "rate": 0.05}],
         "defenses": [{"name": "none"}]}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """The SMALL matrix run once for the module (its two builds are most of the time): its report and folder."""
    tmp_path = tmp_path_factory.mktemp("small-matrix")
    report = bastion.poison(SMALL, store=tmp_path / "s.sqlite", workdir=tmp_path / "w", report_dir=tmp_path / "r")
    return report, tmp_path


def test_matrix_measures_stores_and_reports(small_run) -> None:
    report, tmp_path = small_run
    bad = report.cell("badnets")
    assert bad["attack_success_rate"] > 0.5 > bad["clean_model_attack_success_rate"]
    build = report.summary["builds"][1]
    assert build["train_passes"]["forward_passes"] >= 3000 and build["train_passes"]["gradient_passes"] >= 3000
    assert report.cell("none")["attack_success_rate"] is None and report.cell("none")["clean_accuracy"] > 0.5
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {"poison.html", "poison.md", "poison.json",
                                                            "heatmap.png", "examples.png"}
    with Store(tmp_path / "s.sqlite") as st:
        assert st.get_run(report.run_id).kind == "poison"
        names = {m["name"] for m in st.metrics(bad["run_id"])}
        assert {"clean_accuracy", "attack_success_rate"} <= names
    again = bastion.poison(SMALL, store=tmp_path / "s.sqlite", workdir=tmp_path / "w")
    assert again.run_id == report.run_id  # everything reused


def test_poisoned_model_is_an_ordinary_bastion_model(small_run) -> None:
    """The poisoned model runs through the evasion suite unchanged (issue 21, item 5)."""
    from bastion.poisoning.matrix import build_dir, data_of, load_model

    cfg, tmp_path = parse_poison(SMALL), small_run[1]
    model = load_model(build_dir(cfg, cfg.attack("badnets"), tmp_path / "w" / "builds") / "model")
    test = data_of(cfg).test
    rep = bastion.attack(model, test.x[:20], test.y[:20], bastion.LpThreat("linf", 0.1), "fgsm",
                         progress=False)
    assert rep.robust_accuracy <= rep.clean_accuracy


def _cells_done(store_path: Path) -> int:
    if not store_path.exists():
        return 0
    with Store(store_path) as st:
        return sum(r.kind == CELL_KIND and r.status == "finished" for r in st.list_runs(200))


def test_matrix_resumes_after_a_kill_with_nothing_recomputed(tmp_path: Path) -> None:
    # what is checked is the bookkeeping, not the models: a narrow CNN (a quarter of the default's width) makes
    # the three builds several times cheaper
    extra = {"name": "badnets", "label": "badnets-10", "rate": 0.1}
    cfg = dict(SMALL, name="killed", attacks=[*SMALL["attacks"], extra],
               recipe={"epochs": 1, "arch_kwargs": {"width": 8, "hidden": 64}})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    store = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "bastion", "poison", "run", str(tmp_path / "m.yaml"), "--scheduler", "sync",
           "--store", str(store), "--workdir", str(tmp_path / "w")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while _cells_done(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _cells_done(store)
    assert done_before >= 1, "the matrix never finished a cell before the kill"
    events: list[Event] = []
    with Store(store) as st:
        run_matrix(load_poison(tmp_path / "m.yaml"), st, tmp_path / "w", scheduler="sync", on_event=events.append)
    builds = [e for e in events if e.phase == "build"]
    cells = [e for e in events if e.phase == "cell"]
    assert all(e.skipped for e in builds), "a finished build was recomputed"
    assert sum(e.skipped for e in cells) == done_before and len(cells) == 3


@pytest.mark.parametrize(("change", "message"), [
    ({"rate": 0.0}, "outside (0, 1]"),
    ({"rate": 1.5}, "outside (0, 1]"),
    ({"target": 12}, "target class 12 is out of range"),
    ({"attacks": [{"name": "badnets", "params": {"size": 99}}]}, "does not fit"),
    ({"attacks": [{"name": "badnets", "params": {"colour": 1}}]}, "has no parameter 'colour'"),
    ({"attacks": [{"name": "badnetz"}]}, "Did you mean 'badnets'"),
    ({"defenses": [{"name": "none", "params": {"tune_on": "test"}}]}, "asks for test data"),
])
def test_bad_matrix_input_is_one_clear_line(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(BastionError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        bastion.poison(dict(SMALL, **change), store=tmp_path / "s.sqlite", workdir=tmp_path / "w")
    assert "\n" not in str(info.value)


def test_presets_load() -> None:
    for name in ("mnist", "fashion-mnist"):
        for quick in (False, True):
            cfg = load_poison(name, quick=quick)
            assert cfg.attacks and cfg.defenses


def test_passes_are_counted_per_top_level_forward() -> None:
    import torch

    from bastion.poisoning.cost import count_passes
    from bastion.zoo.architectures import build_model

    model = build_model("cnn", (1, 28, 28), 10)
    with count_passes() as passes:
        model(torch.rand(5, 1, 28, 28))
        with torch.no_grad():
            model(torch.rand(7, 1, 28, 28))
    model(torch.rand(3, 1, 28, 28))  # outside the block: not counted
    assert (passes.forward, passes.gradient) == (12, 5)


def test_poison_list_names_every_algorithm() -> None:
    from typer.testing import CliRunner

    from bastion.cli import app
    from bastion.poisoning import POISON_ATTACKS, POISON_DEFENSES

    out = CliRunner().invoke(app, ["poison", "list"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    for name in [*POISON_ATTACKS.names(), *POISON_DEFENSES.names()]:
        assert name in out.output
