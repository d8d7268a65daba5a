"""Saving a neural detector: ``NAME.safetensors`` (weights and the scaler's buffers) + ``NAME.json`` (what rebuilds
it, the columns and classes it reads and answers, the SHA-256 of the weights). Never pickle. The gradient-boosted
baseline is retrained from its seed instead (see ``bastion.ids.models.gbt``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.errors import CheckpointError, InvalidInputError
from bastion.ids.models.base import Detector
from bastion.ids.models.factory import rebuild

FORMAT = "bastion.ids.detector/1"


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.parent / p.stem if p.suffix in (".safetensors", ".json") else p
    return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"


def save_detector(model: nn.Module, path: str | Path, *, columns: tuple[str, ...] = (), classes: tuple[str, ...] = (),
                  extra: dict[str, Any] | None = None) -> Path:
    """Write the detector; ``columns``/``classes`` (a ``FlowTable``'s) and ``extra`` go into the JSON."""
    if not isinstance(model, Detector):
        raise InvalidInputError("only the neural detectors are saved; the gradient-boosted one is retrained from its "
                                "seed (scikit-learn offers no format but pickle, which bastion never loads).")
    weights, info = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {"format": FORMAT, **model.config, "columns": list(columns), "classes": list(classes),
            "extra": extra or {}, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    info.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return weights


def load_detector(path: str | Path) -> tuple[Detector, dict[str, Any]]:
    """The detector saved at ``path`` (eval mode) and its metadata; a damaged or mismatched pair is one line."""
    weights, info = _paths(path)
    if not info.exists() or not weights.exists():
        raise CheckpointError(f"{weights} and {info} must both exist (a detector is NAME.safetensors + NAME.json); "
                              "save it again with save_detector.")
    try:
        meta = json.loads(info.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"its format is not {FORMAT}")
        model = rebuild(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{info} is not detector metadata bastion wrote ({exc}); save it again.") from None
    if hashlib.sha256(weights.read_bytes()).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{weights} does not match the SHA-256 in {info}; copy both files again from where "
                              "they were made.")
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{weights} does not fit its metadata ({first}); save it again.") from None
    return model.eval(), meta
