"""The models a service answers for: a zoo name, a checkpoint file, or a saved IDS detector."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError


@dataclass
class Served:
    """One served model: ``input_shape`` without the batch dimension, the value range it accepts (``None``: any)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    kind: str  # "zoo" or "ids"
    lower: float | None = None
    upper: float | None = None
    dtype: torch.dtype = torch.float32
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, x: Tensor) -> Tensor:
        with self.lock, torch.no_grad():
            return self.module(x.to(self.dtype))


def _is_detector(path: Path) -> bool:
    import json

    info = path.parent / f"{path.stem}.json" if path.suffix in (".safetensors", ".json") else \
        path.parent / f"{path.name}.json"
    try:
        return str(json.loads(info.read_text()).get("format", "")).startswith("bastion.ids.detector/")
    except (OSError, ValueError, AttributeError):
        return False


def load_served(spec: str, *, lower: float | None = 0.0, upper: float | None = 1.0) -> Served:
    """``spec`` is ``NAME=SOURCE`` or ``SOURCE``: a zoo model name, a checkpoint path, or a saved IDS detector path.

    Image models take values in ``[lower, upper]`` (default 0..1, the zoo's range); IDS detectors take raw flow
    features in any range (their scaler is part of the model)."""
    name, _, source = spec.rpartition("=")
    source = source.strip()
    name = name.strip() or Path(source).stem
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InvalidInputError(f"model name {name!r} must be letters, digits, '-', '_' or '.'; use NAME=SOURCE.")
    if _is_detector(Path(source)):
        from bastion.ids.models.io import load_detector

        module, meta = load_detector(source)
        return Served(name, module, (int(meta["input_dim"]),), int(meta["num_classes"]), "ids",
                      dtype=torch.float64)
    from bastion.zoo import load_model

    module, meta = load_model(source)
    return Served(name, module.eval(), tuple(meta.input_shape), int(meta.num_classes), "zoo", lower, upper)
