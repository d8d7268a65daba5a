"""`bastion ids` from the command line: the quick evaluation on the shipped snapshot, and train then attack on a file
of flows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.ids.flowgen import write_bastion_csv
from typer.testing import CliRunner

from bastion.cli import app
from bastion.store import Store


def test_quick_evaluation_of_the_snapshot(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ids", "evaluate", "--quick", "--store", str(tmp_path / "s.sqlite"),
                                      "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "valid success" in result.output and "PortScan" in result.output
    summary = json.loads((tmp_path / "report" / "ids.json").read_text())
    assert summary["flows"] > 10000 and len(summary["class_counts"]) == 10
    cells = {c["attack"]: c for c in summary["cells"]}
    assert set(cells) == {"pgd", "cpgd", "capgd"}
    for name in ("cpgd", "capgd"):  # the constrained attacks return flows that could exist, every one
        assert cells[name]["valid_rate"] == 1.0 and cells[name]["attacked"] > 100
        assert all(r["valid_rate"] == 1.0 for r in cells[name]["per_class"].values())
    # unconstrained PGD "succeeds" with flows that break the relations: nothing of it is a valid evasion
    assert cells["pgd"]["success_rate"] > 0.5 and cells["pgd"]["valid_success_rate"] == 0.0
    assert summary["detectors"]["mlp"]["detection_rate"] > 0.9
    assert (tmp_path / "report" / "ids.html").exists()
    runs = Store(tmp_path / "s.sqlite").list_runs(20)
    assert sorted(r.kind for r in runs) == ["ids", "ids-attack", "ids-attack", "ids-attack", "ids-detector"]


def test_train_then_attack_a_saved_detector(tmp_path: Path) -> None:
    data = write_bastion_csv(str(tmp_path / "flows.csv"), n=600)
    runner = CliRunner()
    trained = runner.invoke(app, ["ids", "train", "--out", str(tmp_path / "det"), "--data", data, "--epochs", "10"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "det.safetensors").exists() and "false-positive rate" in trained.output
    out = tmp_path / "adv.npz"
    attacked = runner.invoke(app, ["ids", "attack", "--detector", str(tmp_path / "det.safetensors"), "--data", data,
                                   "--attack", "cpgd", "--eps", "0.1", "--per-class", "20", "--out", str(out)])
    assert attacked.exit_code == 0, attacked.output
    assert "valid 100.0%" in " ".join(attacked.output.split())
    saved = np.load(out)
    assert saved["clean"].shape == saved["adversarial"].shape and saved["clean"].shape[1] == 52
    other = runner.invoke(app, ["ids", "attack", "--detector", str(tmp_path / "det.safetensors"), "--attack", "cpgd"])
    assert other.exit_code == 0, other.output  # the snapshot has the same 52 columns


def test_list() -> None:
    result = CliRunner().invoke(app, ["ids", "list"])
    assert result.exit_code == 0
    for name in ("mlp", "gbt", "capgd", "moeva2", "idsgan", "snapshot"):
        assert name in result.output
