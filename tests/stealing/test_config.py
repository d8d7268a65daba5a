"""The stealing config: presets load, errors are one line, `bastion steal list` names every algorithm."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import bastion
from bastion.cli import app
from bastion.errors import InvalidInputError
from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, STEAL_ATTACKS
from bastion.stealing.config import check_names, load_steal, parse_steal, preset_names


@pytest.mark.parametrize("quick", [False, True])
def test_presets_load_and_name_only_registered_algorithms(quick: bool) -> None:
    for name in preset_names():
        cfg = load_steal(name, quick=quick)
        check_names(cfg)
        assert cfg.budget_points[-1] == cfg.budget


def test_checkpoints_end_at_the_budget() -> None:
    cfg = parse_steal({"budget": 50, "checkpoints": [10, 30, 10], "attacks": [{"name": "knockoff-random"}]})
    assert cfg.budget_points == [10, 30, 50]


@pytest.mark.parametrize(("change", "message"), [
    ({"checkpoints": [0]}, "checkpoint 0 is outside (0, budget=100]"),
    ({"checkpoints": [101]}, "checkpoint 101 is outside"),
    ({"attacks": []}, "at least one attack"),
    ({"attacks": [{"name": "copycat"}, {"name": "copycat"}]}, "appears twice"),
])
def test_bad_configs_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_steal({"budget": 100, "attacks": [{"name": "knockoff-random"}], **change})


def test_unknown_names_and_parameters_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="no parameter 'nope'"):
        check_names(parse_steal({"attacks": [{"name": "knockoff-random", "params": {"nope": 1}}]}))
    with pytest.raises(KeyError, match="Did you mean 'knockoff-random'"):
        check_names(parse_steal({"attacks": [{"name": "knockoff-randm"}]}))


def test_list_names_every_algorithm_and_the_api_is_public() -> None:
    out = " ".join(CliRunner().invoke(app, ["steal", "list"], env={"COLUMNS": "300"}).output.split())
    for name in [*STEAL_ATTACKS, *OUTPUT_DEFENSES, *DETECTORS]:
        assert name in out
    assert bastion.steal is bastion.stealing.api.steal
