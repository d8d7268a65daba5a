"""The command line, end to end, on a checkpoint trained in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_data_and_models_and_attacks_lists() -> None:
    code, out = invoke("data", "list")
    assert code == 0 and "mnist" in out and "phishing" in out
    code, out = invoke("data", "show", "digits")
    assert code == 0 and "8x8" in out and "CC BY 4.0" in out
    code, out = invoke("models", "list")
    assert code == 0 and "mnist-cnn" in out and "resnet" in out
    code, out = invoke("attacks", "list")
    assert code == 0 and "pgd" in out and "Madry" in out


def test_evaluate_records_a_run_and_writes_reports(digits_checkpoint: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "s.sqlite")
    code, out = invoke("evaluate", "--model", str(digits_checkpoint), "--n", "40", "--eps", "0.2", "--suite", "fast",
                       "--store", db)
    assert code == 0, out
    assert "clean accuracy" in out and "robust accuracy" in out
    run_dir = next((tmp_path / "runs").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["schema"] == "bastion.report/2" and report["summary"]["n"] == 40
    assert report["summary"]["suite"] == "fast" and "apgd-ce" in report["summary"]["stages"]
    assert (run_dir / "report.html").read_text().startswith("<!doctype html>")
    assert "| **robust accuracy** |" in (run_dir / "report.md").read_text()
    code, out = invoke("runs", "list", "--store", db)
    assert code == 0 and run_dir.name[:10] in out
    code, out = invoke("runs", "show", run_dir.name, "--store", db)
    assert code == 0 and '"clean_accuracy"' in out
    code, out = invoke("report", run_dir.name, "--store", db, "--out", str(tmp_path / "again"))
    assert code == 0 and (tmp_path / "again" / "report.md").exists()


def test_attack_command_with_params(digits_checkpoint: Path, tmp_path: Path) -> None:
    code, out = invoke("attack", "fgsm", "--model", str(digits_checkpoint), "--n", "30", "--norm", "l2",
                       "--eps", "1.0", "--store", str(tmp_path / "s.sqlite"))
    assert code == 0, out
    code, out = invoke("attack", "pgd", "--model", str(digits_checkpoint), "--n", "30", "--eps", "0.1",
                       "-p", "steps=5", "-p", "loss=cw", "--store", str(tmp_path / "s.sqlite"))
    assert code == 0, out


def test_targeted_attack_command_reaches_the_stored_targets(digits_checkpoint: Path, digits_model,
                                                            tmp_path: Path) -> None:
    from bastion.data import load_dataset
    from bastion.evaluation.store import Store

    db = tmp_path / "s.sqlite"
    code, out = invoke("attack", "pgd", "--model", str(digits_checkpoint), "--n", "40", "--eps", "0.3",
                       "--targeted", "--targets", "least-likely", "-p", "steps=20", "--store", str(db))
    assert code == 0, out
    assert "targeted success rate" in out and "least-likely" in out
    store = Store(db)
    run = store.list_runs()[0]
    rows = store.samples(run.id, "pgd")
    targets = store.get_artifact(run.id, "targets/0")
    x = load_dataset("digits", seed=0).test.x[:40]
    with torch.no_grad():
        least = digits_model(x).scatter(1, torch.tensor([r["label"] for r in rows])[:, None], float("inf")).argmin(1)
    assert targets == least.tolist()
    reached = [r["success"] for r in rows]
    assert 0 < sum(reached) < 40  # eps 0.3 reaches some least-likely targets, not all
    assert all(r["adv_pred"] == t for r, t in zip(rows, targets, strict=True) if r["success"])
    still = sum(r["clean_correct"] and r["adv_pred"] == r["label"] for r in rows)
    assert run.summary["targeted"] and run.summary["robust_accuracy"] == still / 40


def test_train_command(tmp_path: Path) -> None:
    code, out = invoke("train", "--arch", "mlp", "--dataset", "digits", "--epochs", "2", "--out",
                       str(tmp_path / "m"))
    assert code == 0, out
    assert (tmp_path / "m.safetensors").exists() and "test accuracy" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "show", "mnits"), "Did you mean 'mnist'"),
        (("evaluate", "--model", "nope"), "Unknown model 'nope'"),
        (("evaluate", "--eps", "-1"), "eps must be finite and non-negative"),
        (("evaluate", "--eps", "nan"), "eps must be finite and non-negative"),
        (("evaluate", "--norm", "l3"), "norm"),
        (("evaluate", "--suite", "quick"), "suite"),
        (("attack", "pgdd", "--eps", "0.1"), "Did you mean 'pgd'"),
        (("attack", "fgsm", "--norm", "l1", "--eps", "1", "--n", "5"), "supports norms"),
        (("attack", "pgd", "--eps", "0.1", "--targeted", "--targets", "nearest"), "not a target choice"),
        (("evaluate", "--model", "mnist-cnn", "--dataset", "digits"), "takes inputs of shape"),
        (("runs", "show", "no-such-run"), "No run"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    full = [*args] + (["--store", str(tmp_path / "s.sqlite")] if args[0] in ("evaluate", "attack", "runs") else [])
    code, out = invoke(*full)
    assert code == 2, out
    assert message in " ".join(out.split())
    assert "Traceback" not in out


def test_attack_a_remote_endpoint_over_http(digits_model, tmp_path: Path) -> None:
    from bastion.blackbox.http import serve_model

    with serve_model(digits_model, mode="scores") as server:
        code, out = invoke("attack", "square", "--target", server.url, "--dataset", "digits", "--n", "10",
                           "--eps", "0.2", "--max-queries", "200", "--store", str(tmp_path / "s.sqlite"))
        assert code == 0, out
        assert server.queries <= 10 * (200 + 2)  # budget per point, plus the runner's clean check and probe
        code, out = invoke("attack", "pgd", "--target", server.url, "--dataset", "digits", "--eps", "0.2",
                           "--store", str(tmp_path / "s.sqlite"))
        assert code == 2 and "score- or decision-based" in " ".join(out.split())
