"""Checkpoints: weights as safetensors plus a JSON file of metadata beside them.

``name.safetensors`` holds the state dict; ``name.json`` holds the architecture, its arguments, the
data set, the training recipe, metrics, seed, code versions and the SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.errors import CheckpointError
from bastion.zoo.architectures import build_model

FORMAT = "bastion.checkpoint/1"


@dataclass(frozen=True)
class CheckpointMeta:
    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    dataset: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    bastion_version: str = ""
    torch_version: str = ""
    python_version: str = ""
    created: str = ""
    sha256: str = ""
    format: str = FORMAT

    @staticmethod
    def from_json(data: Any) -> CheckpointMeta:
        """The metadata from its JSON form, each field checked (``ValueError`` names the field and what it needs)."""
        if not isinstance(data, dict):
            raise ValueError(f"it is not a JSON object but a {type(data).__name__}")
        known = set(CheckpointMeta.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        missing = [k for k in ("arch", "input_shape", "num_classes", "dataset") if k not in data]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        shape = data["input_shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input_shape must be a list of positive integers, not {shape!r}")
        if not isinstance(data["num_classes"], int) or isinstance(data["num_classes"], bool) or \
                data["num_classes"] < 0:  # 0: not a classifier (the DDPM denoisers)
            raise ValueError(f"num_classes must be a non-negative integer, not {data['num_classes']!r}")
        for key in ("arch_kwargs", "recipe", "metrics"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{key} must be a mapping (a JSON object), not {data[key]!r}")
        if not isinstance(data["arch"], str) or not isinstance(data["dataset"], str):
            raise ValueError("arch and dataset must be strings")
        data["input_shape"] = tuple(shape)
        return CheckpointMeta(**data)


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``NAME.safetensors`` and ``NAME.json`` for a path given with either suffix or none (dots in NAME are kept)."""
    p = Path(path)
    stem = p.parent / p.stem if p.suffix in (".safetensors", ".json") else p
    return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, meta: CheckpointMeta) -> Path:
    """Write ``path.safetensors`` and ``path.json``; returns the weights path."""
    from bastion import __version__

    weights, info = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    full = asdict(meta) | {
        "bastion_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": _sha256(weights),
    }
    info.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return weights


def read_meta(path: str | Path) -> CheckpointMeta:
    _weights, info = _paths(path)
    if not info.exists():
        raise CheckpointError(f"Checkpoint metadata {info} not found; a checkpoint is NAME.safetensors + NAME.json.")
    try:
        return CheckpointMeta.from_json(json.loads(info.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint metadata {info} is not valid: {exc}; re-save the checkpoint "
                              "(save_checkpoint writes it).") from None


def load_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the architecture from the metadata, load the weights strictly, return it in eval mode."""
    weights, _ = _paths(path)
    meta = read_meta(path)
    if not weights.exists():
        raise CheckpointError(f"Checkpoint weights {weights} not found beside its metadata; re-train or re-copy it.")
    if verify and meta.sha256 and _sha256(weights) != meta.sha256:
        raise CheckpointError(
            f"{weights} does not match the SHA-256 in its metadata (corrupt or replaced); re-train it or copy both "
            "files again from where they were made (Python callers who changed the weights on purpose can pass "
            "load_checkpoint(..., verify=False))."
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}); re-train or re-copy it."
        ) from None
    model = build_model(meta.arch, meta.input_shape, meta.num_classes, **meta.arch_kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{weights} does not fit architecture {meta.arch!r} with {meta.arch_kwargs} ({first}); "
            "check the metadata's arch/arch_kwargs or use the checkpoint with the architecture it was trained with."
        ) from None
    return model.eval(), meta
