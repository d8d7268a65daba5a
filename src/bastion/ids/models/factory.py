"""Building detectors by name, and rebuilding a saved one's shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.ids.models import gbt as _gbt
from bastion.ids.models import nets as _nets
from bastion.ids.models.base import IDS_MODELS, Detector
from bastion.ids.models.scaling import FlowScaler
from bastion.registry import check_params, keyword_defaults

_REGISTERED = (_nets, _gbt)  # importing them fills IDS_MODELS


def categorical_columns(columns: Sequence[str], categorical: Mapping[str, Sequence]) -> dict[int, tuple[float, ...]]:
    """A ``FlowTable``'s categorical columns kept as one numeric code (Protocol), by index, for the scaler."""
    return {columns.index(c): tuple(float(v) for v in vals) for c, vals in categorical.items() if c in columns}


def build_detector(name: str, x: np.ndarray | Tensor, num_classes: int, *, generator: torch.Generator,
                   categorical: Mapping[int, Sequence[float]] | None = None, log: str | Sequence[bool] = "auto",
                   **kwargs: Any) -> nn.Module:
    """An untrained detector ``name`` for rows like ``x`` (its scaler fitted on ``x``) and ``num_classes``."""
    spec = IDS_MODELS.get(name)
    params = check_params("IDS detector", name, kwargs, {k: v for k, v in keyword_defaults(spec.build).items()})
    if num_classes < 2:
        raise InvalidInputError(f"a detector needs at least 2 classes; got {num_classes}.")
    dim = int(np.shape(x)[1])
    if not spec.differentiable:
        return spec.build(dim, num_classes, generator=generator, **params)
    scaler = FlowScaler.fit(x, categorical=categorical, log=log)
    body = spec.build(scaler.out_features, num_classes, generator=generator, **params)
    config = {"arch": name, "arch_kwargs": params, "input_dim": dim, "num_classes": num_classes,
              "categorical": {str(k): list(v) for k, v in scaler.categorical.items()}}
    return Detector(scaler, body, config)


def rebuild(meta: Mapping[str, Any]) -> Detector:
    """An untrained ``Detector`` of the shapes ``meta`` (a saved detector's JSON) describes."""
    spec = IDS_MODELS.get(meta["arch"])
    if not spec.differentiable:
        raise ValueError(f"{meta['arch']} is not saved, it is retrained")
    scaler = FlowScaler(int(meta["input_dim"]), {int(k): v for k, v in dict(meta["categorical"]).items()})
    body = spec.build(scaler.out_features, int(meta["num_classes"]), generator=torch.Generator().manual_seed(0),
                      **dict(meta["arch_kwargs"]))
    config = {k: meta[k] for k in ("arch", "arch_kwargs", "input_dim", "num_classes", "categorical")}
    return Detector(scaler, body, config)


def predict(model: nn.Module, x: np.ndarray | Tensor) -> Tensor:
    """Class indices for raw rows (any detector)."""
    rows = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float64))
    with torch.no_grad():
        return model(rows).argmax(1)
