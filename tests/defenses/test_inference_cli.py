"""`bastion defend list` and `bastion defend evaluate` on a tiny digits model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bastion.cli import app


def test_defend_list() -> None:
    result = CliRunner().invoke(app, ["defend", "list"])
    assert result.exit_code == 0, result.output
    assert "feature-squeezing-detector" in result.output and "diffpure" in result.output


def test_defend_evaluate_reports_both_runs(digits_checkpoint) -> None:
    result = CliRunner().invoke(app, ["defend", "evaluate", "--defense", "bit-depth", "-p", "bits=1", "--model",
                                      str(digits_checkpoint), "--n", "8", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["params"] == {"bits": 1} and row["plan"]["bpda_modules"] == ["preprocess"]
    assert {"robust_non_adaptive", "robust_adaptive", "gap", "latency_multiple", "clean_accuracy"} <= set(row)


def test_defend_evaluate_unknown_defense_is_one_clear_error(digits_checkpoint) -> None:
    result = CliRunner().invoke(app, ["defend", "evaluate", "--defense", "bit-dept", "--model", str(digits_checkpoint)])
    assert result.exit_code == 2 and "Did you mean" in result.output
