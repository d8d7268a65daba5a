"""Recipes validate; `bastion adv-train` trains, saves a checkpoint with costs and curves, and a plot."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bastion.cli import app
from bastion.defenses.training import Recipe, load_recipe
from bastion.errors import InvalidInputError
from bastion.zoo import load_model

RECIPES = Path(__file__).parents[2] / "docs" / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path) -> None:
    assert load_recipe(path).eps > 0


def test_recipe_rejects_unknown_method_options(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not hyperparameters"):
        Recipe(defense="trades", method={"gamma": 1.0})
    with pytest.raises(ValidationError):
        Recipe(defense="pgd-at", eps=-1)
    (tmp_path / "r.yaml").write_text("defense: mart\nepochs: 2\nmethod: {beta: 5.0}\n")
    assert load_recipe(tmp_path / "r.yaml", epochs=3).epochs == 3
    with pytest.raises(InvalidInputError):
        load_recipe(tmp_path / "missing.yaml")


def test_adv_train_command(tmp_path: Path) -> None:
    out = tmp_path / "digits-fast"
    result = CliRunner().invoke(app, ["adv-train", "--defense", "fast-at", "--dataset", "digits", "--eps", "0.1",
                                      "--epochs", "1", "--lr", "0.003", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _, meta = load_model(str(out.with_suffix(".safetensors")))
    assert meta.recipe["defense"] == "fast-at" and meta.recipe["eps"] == 0.1
    cost = meta.metrics["cost"]
    assert cost["multiple_of_standard_training"] == 2.0 and cost["train_seconds"] > 0
    assert len(meta.metrics["val_curve"]["val_robust"]) == 1
    assert out.with_suffix(".png").stat().st_size > 0 and (tmp_path / "digits-fast.state.pt").exists()
    bad = CliRunner().invoke(app, ["adv-train", "--defense", "nope", "--out", str(out)])
    assert bad.exit_code == 2


def test_train_with_defense_is_adv_train(tmp_path: Path) -> None:
    out = tmp_path / "digits-trades"
    result = CliRunner().invoke(app, ["train", "--defense", "trades", "--dataset", "digits", "--eps", "0.1",
                                      "--epochs", "1", "--train-subset", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    _, meta = load_model(str(out.with_suffix(".safetensors")))
    # only the options given reach the recipe: `train`'s own defaults (arch cnn, 10 epochs) do not
    assert meta.recipe["defense"] == "trades" and meta.recipe["epochs"] == 1 and meta.recipe["train_subset"] == 200
    assert meta.recipe["arch"] == Recipe(defense="trades").arch
    bad = CliRunner().invoke(app, ["train", "--dataset", "digits", "--eps", "0.1", "--out", str(out)])
    assert bad.exit_code == 2 and "--defense" in bad.output
    bad = CliRunner().invoke(app, ["train", "--defense", "trades", "--patience", "3", "--out", str(out)])
    assert bad.exit_code == 2 and "recipe" in bad.output
