"""What a poisoning build or cell stores besides its metrics: example images for the report, an algorithm's
``info`` made JSON-safe, and a detector's score histogram."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from bastion.data.base import Split


def examples(poisoned: Any, train: Split, attacked: Split | None, n: int = 4) -> dict[str, Any]:
    """A few poisoned training points next to their clean originals, and attack test inputs, for the report."""
    idx = torch.nonzero(poisoned.poisoned).flatten()[:n]
    out: dict[str, Any] = {"poisoned": poisoned.train.x[idx].tolist(), "clean": train.x[idx].tolist(),
                           "labels": poisoned.train.y[idx].tolist(), "clean_labels": train.y[idx].tolist()}
    if attacked is not None:
        out["attack_test"] = attacked.x[:n].tolist()
    return out


def jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, Tensor):
            if v.numel() <= 16:
                out[k] = v.tolist()
        elif isinstance(v, str | int | float | bool) or v is None:
            out[k] = v
        elif isinstance(v, list | tuple | dict):
            try:
                json.dumps(v)
                out[k] = v
            except TypeError:
                continue
    return out


def histogram(scores: Tensor, truth: Tensor, bins: int = 30) -> dict[str, Any]:
    s = torch.nan_to_num(scores.double())
    lo, hi = float(s.min()), float(s.max())
    hi = hi if hi > lo else lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1)
    count = lambda v: torch.histc(v, bins=bins, min=lo, max=hi).tolist()  # noqa: E731
    return {"edges": edges.tolist(), "poisoned": count(s[truth]), "clean": count(s[~truth])}
