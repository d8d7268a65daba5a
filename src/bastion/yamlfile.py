"""Reading a user's YAML file (sweep, compare, recipe): one clear line for a missing, binary or malformed file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bastion.errors import InvalidInputError, config_errors

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (``what`` names the file in errors, e.g. "sweep config")."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{p} is not a text YAML file (it is binary or not UTF-8); give the {what}.") from None
    except OSError as exc:
        raise InvalidInputError(f"{p} cannot be read ({exc.strerror}); give the path of the {what}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{p} is not valid YAML ({' '.join(str(exc).split())}); fix the {what}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"{p} must hold a mapping (KEY: value lines) for the {what}, not a "
                                f"{type(data).__name__}.")
    return data


def preset_names(presets: Path) -> list[str]:
    """The built-in presets in a folder of ``NAME.yaml`` files."""
    return sorted(p.stem for p in presets.glob("*.yaml") if not p.stem.endswith("-quick"))


def read_preset(source: str | Path, presets: Path, what: str, command: str) -> tuple[dict[str, Any], Path]:
    """A YAML file, or the name of a built-in preset in ``presets``: its mapping (the ``quick:`` overrides still in
    it) and the path read. ``what`` names the file in errors, ``command`` is where to read about it."""
    path = Path(source)
    if not path.exists():
        names = preset_names(presets)
        if str(source) not in names:
            raise InvalidInputError(f"{source} is neither a {what} YAML file nor a built-in preset "
                                    f"({', '.join(names)}); see `{command} --help`.")
        path = presets / f"{source}.yaml"
    return read_yaml_mapping(path, what), path


def with_quick(data: dict[str, Any], quick: bool, default_name: str) -> dict[str, Any]:
    """A preset's mapping without its ``quick:`` overrides, or (``quick``) with them applied and ``-quick`` added to
    its name."""
    overrides = data.pop("quick", None) or {}
    return {**data, **overrides, "name": f"{data.get('name', default_name)}-quick"} if quick else data


def parse_config(model: type[M], data: dict[str, Any], where: str, what: str) -> M:
    """``data`` validated as ``model``; one line naming ``where`` and the first problems otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{where}: invalid {what}: {config_errors(exc)}") from None
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def spec_hash(*parts: Any) -> str:
    """A short content key of config parts (pydantic models as their JSON data): runs are keyed by what decides them."""
    blob = json.dumps([p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
