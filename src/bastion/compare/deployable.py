"""Deployable modules of a comparison on disk: a recipe (JSON) and the weights (safetensors), never a pickle.

``NAME-HASH.module.safetensors`` holds the module's full state dict; ``NAME-HASH.module.json`` holds the recipe it
is rebuilt from, the data set facts the evaluation needs, and the weights' SHA-256. Loading rebuilds the module's
skeleton from the recipe -- a checkpoint (architecture + weights, optionally under the smoothing noise) or a
registered inference defense around its base and members, re-fitted on the same seeded data with its training
steps skipped -- and then loads the saved state dict into it strictly, so every trained number comes from the
file and a file handed over by someone else can carry numbers, never code.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from bastion.errors import CheckpointError

SUFFIX = ".module.safetensors"
FORMAT = "bastion.deployable/1"
# Builders whose training can be skipped when rebuilding a skeleton (the weights then come from the file).
SKELETON = {"distillation": {"epochs": 0}, "dynamic-ensemble": {"epochs": 0}}


def sidecar(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(SUFFIX) + ".module.json")


def save_deployable(module: nn.Module, path: Path, recipe: dict[str, Any], facts: dict[str, Any]) -> str:
    """Write the weights and the recipe (weights first, so a half-written pair never has a valid sidecar)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(module.eval(), str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(path)
    side = {"format": FORMAT, **facts, "sha256": digest, "recipe": recipe}
    sidecar(path).write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return digest


def read_sidecar(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.suffix == ".pt":
        raise CheckpointError(f"{p} is a pickled module from an older bastion; bastion no longer loads pickles. "
                              "Re-run `bastion compare` to rebuild it as a recipe and safetensors weights.")
    side = sidecar(p)
    if not p.exists() or not side.exists():
        raise CheckpointError(f"{p} (or its recipe {side.name}) is missing; re-run `bastion compare` to rebuild it.")
    info = json.loads(side.read_text())
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a bastion deployable-module recipe ({FORMAT}).")
    return dict(info)


def load_deployable(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the module that ``path`` holds and load its weights; returns ``(module in eval mode, sidecar)``."""
    p = Path(path)
    info = read_sidecar(p)
    if hashlib.sha256(p.read_bytes()).hexdigest() != info["sha256"]:
        raise CheckpointError(f"{p} does not match the SHA-256 in {sidecar(p).name}; delete both and re-run "
                              "`bastion compare` to rebuild the defense.")
    module = rebuild(info["recipe"], p.parent)
    missing, unexpected = load_model(module, str(p), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{p} does not fit the module its recipe builds (missing {sorted(missing)[:4]}, "
                              f"unexpected {sorted(unexpected)[:4]}); re-run `bastion compare` to rebuild it.")
    return module.eval(), info


def rebuild(recipe: dict[str, Any], folder: Path) -> nn.Module:
    """The module a recipe describes, before its saved weights are loaded."""
    if recipe["kind"] == "checkpoint":
        return _from_checkpoint(recipe, folder)
    if recipe["kind"] == "deployable":  # a dependency: another built module of the same comparison
        return load_deployable(folder / recipe["file"])[0]
    if recipe["kind"] == "defense":
        return _from_defense(recipe, folder)
    raise CheckpointError(f"Unknown recipe kind {recipe['kind']!r}; re-run `bastion compare` to rebuild.")


def _from_checkpoint(recipe: dict[str, Any], folder: Path) -> nn.Module:
    from bastion.zoo.checkpoint import load_checkpoint

    model, _ = load_checkpoint(folder / recipe["file"])
    if recipe.get("noise_sigma") is None:
        return model
    from bastion.defenses.inference.base import Preprocessed
    from bastion.defenses.inference.transforms import GaussianNoise

    return Preprocessed(GaussianNoise(recipe["noise_sigma"], -math.inf, math.inf, seed=recipe["seed"]), model)


def _from_defense(recipe: dict[str, Any], folder: Path) -> nn.Module:
    from bastion.data import load_dataset
    from bastion.defenses.inference import DEFENSES

    params = dict(recipe["params"]) | SKELETON.get(recipe["method"], {})
    members = [rebuild(m, folder) for m in recipe["members"]]
    if members:
        params["members"] = members
    if recipe.get("data"):
        params["data"] = getattr(load_dataset(recipe["dataset"], seed=recipe["seed"]), recipe["data"])
    return DEFENSES.get(recipe["method"]).build(rebuild(recipe["base"], folder), **params).eval()


@dataclass(frozen=True)
class BuiltMeta:
    """What the evaluation job needs to know about a deployable module (mirrors ``CheckpointMeta``)."""

    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int


def load_built(path: str | Path) -> tuple[nn.Module, BuiltMeta]:
    """Load a deployable module written by ``build_entry`` (rebuilt from its recipe, weights hash-checked)."""
    module, info = load_deployable(path)
    return module, BuiltMeta(info["dataset"], tuple(info["input_shape"]), int(info["num_classes"]))
