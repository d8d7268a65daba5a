"""`bastion certify` and `bastion certify-train` end to end on digits, and their errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An IBP-trained crown-cnn on digits, trained through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "ibp"
    code, text = invoke("certify-train", "--method", "ibp", "--dataset", "digits", "--epochs", "6", "--eps", "0.1",
                        "--warmup-epochs", "2", "--ramp-epochs", "3", "--lr", "3e-3", "--out", str(out))
    assert code == 0, text
    assert "test accuracy" in text and out.with_suffix(".safetensors").exists()
    return str(out)


def test_certify_command_writes_reports_and_resumes(ckpt: str, tmp_path: Path) -> None:
    db, rep = str(tmp_path / "s.sqlite"), tmp_path / "rep"
    args = ("certify", "--method", "crown", "--bound", "crown-ibp", "--model", ckpt, "--n", "20", "--radii",
            "0.05,0.1", "-p", "n_iter=5", "--store", db, "--out", str(rep))
    code, out = invoke(*args)
    assert code == 0, out
    assert "certified accuracy at 0.1" in " ".join(out.split())
    report = json.loads((rep / "report.json").read_text())
    assert report["summary"]["n"] == 20 and report["config"]["attack_params"] == {"n_iter": 5}
    assert (rep / "certified.png").exists() and "| L∞ radius |" in (rep / "report.md").read_text()
    code, out = invoke("runs", "list", "--store", db)
    assert code == 0, out
    code, out = invoke("runs", "show", report["run_id"], "--store", db)
    assert code == 0 and '"certified_accuracy"' in out and '"kind": "certify"' in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--method", "smoothing"), "needs the noise level"),
        (("--method", "smoothin"), "Did you mean 'smoothing'"),
        (("--method", "ibp", "--sigma", "0.5"), "are smoothing options"),
        (("--method", "ibp", "--radii", "0.1,abc"), "comma-separated"),
        (("--method", "ibp", "--eps", "-1"), "must be finite and non-negative"),
        (("--method", "smoothing", "--sigma", "0.25", "--alpha", "2"), "alpha must be in (0, 1)"),
        (("--method", "ibp", "--attack", "zzz"), "attack"),
        (("--method", "ibp", "--n", "0"), "n:"),
        (("--method", "lipschitz",), "No Lipschitz bound for layer type Conv2d"),
        (("--method", "ibp", "--dataset", "mnist"), "takes inputs of shape"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(ckpt: str, args: tuple[str, ...], message: str,
                                               tmp_path: Path) -> None:
    code, out = invoke("certify", "--model", ckpt, *args, "--store", str(tmp_path / "s.sqlite"))
    assert code == 2, out
    assert message in " ".join(out.split())
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("certify", "--method", "crown", "--model", "mnist-cnn", "--n", "2"), "MaxPool2d"),
        (("certify", "--method", "ibp", "--model", "nope"), "Unknown model 'nope'"),
        (("certify-train", "--method", "ibpp", "--dataset", "digits"), "Unknown training method 'ibpp'"),
    ],
)
def test_bad_model_or_training_method(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    extra = ["--out", str(tmp_path / "m")] if args[0] == "certify-train" else ["--store", str(tmp_path / "s.sqlite")]
    code, out = invoke(*args, *extra)
    assert code == 2, out
    assert message in " ".join(out.split())
    assert "Traceback" not in out
