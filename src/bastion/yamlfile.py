"""Reading a user's YAML file (sweep, compare, recipe): one clear line for a missing, binary or malformed file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bastion.errors import InvalidInputError


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
