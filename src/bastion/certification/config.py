"""The validated configuration of a certification run (pydantic)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.certification import smoothing

METHOD_NORM = {"smoothing": "l2", "lipschitz": "l2", "ibp": "linf", "crown": "linf"}
DEFAULT_RADII = {
    "smoothing": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
    "lipschitz": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    "ibp": [0.0, 0.1, 0.2, 0.3],
    "crown": [0.0, 0.1, 0.2, 0.3],
}
DEFAULT_ATTACK_PARAMS = {"apgd": {"n_iter": 50}, "pgd": {"steps": 40}, "fmn": {"steps": 100}, "none": {}}


class CertifyConfig(BaseModel):
    """One certification run. ``eps`` is the headline radius (L2 for smoothing/lipschitz, L-inf for ibp and
    crown by default); ``radii`` is the curve's grid (``eps`` is added to it); ``preset`` fills ``n0``,
    ``samples`` and ``alpha`` of randomized smoothing where they are not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["smoothing", "ibp", "crown", "lipschitz"]
    model: str
    dataset: str | None = None
    split: Literal["train", "val", "test"] = "test"
    n: int = Field(100, gt=0, description="number of points, from the start of the split")
    eps: float | None = None
    radii: list[float] | None = None
    norm: Literal["linf", "l2"] | None = None  # crown only may use l2
    sigma: float | None = None
    preset: Literal["quick", "paper"] = "quick"
    n0: int | None = Field(None, gt=0)
    samples: int | None = Field(None, gt=0)
    alpha: float | None = None
    mc_batch: int = Field(1000, gt=0, description="noise samples per forward pass (smoothing)")
    bound: Literal["crown", "crown-ibp"] = "crown"  # crown: CROWN or CROWN-IBP intermediate bounds
    attack: Literal["apgd", "pgd", "fmn", "none"] = "apgd"
    attack_params: dict[str, Any] | None = None
    attack_noise: int = Field(16, gt=0, description="noise draws of the smoothing surrogate the attack uses")
    check_samples: int = Field(500, gt=0, description="noise draws judging each smoothing candidate")
    batch_size: int = Field(100, gt=0)
    seed: int = 0

    @field_validator("eps", "sigma")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"must be finite and non-negative, got {v}")
        return v

    @field_validator("radii")
    @classmethod
    def _radii(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not math.isfinite(r) or r < 0 for r in v)):
            raise ValueError(f"radii must be a non-empty list of finite non-negative numbers, got {v}")
        return v

    @model_validator(mode="after")
    def _method_fields(self) -> CertifyConfig:
        if self.method == "smoothing" and (self.sigma is None or self.sigma <= 0):
            raise ValueError("randomized smoothing needs a positive noise level: pass --sigma, e.g. --sigma 0.25")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.norm is not None and self.norm != METHOD_NORM[self.method] and self.method != "crown":
            raise ValueError(f"{self.method} certifies {METHOD_NORM[self.method]} balls only, not {self.norm}")
        return self

    # resolved values ---------------------------------------------------------------------------------
    def threat_norm(self) -> str:
        return self.norm or METHOD_NORM[self.method]

    def headline(self) -> float:
        if self.eps is not None:
            return self.eps
        grid = self.radii or DEFAULT_RADII[self.method]
        return max(grid)

    def grid(self) -> list[float]:
        base = self.radii if self.radii is not None else DEFAULT_RADII[self.method]
        return sorted({0.0, *map(float, base), float(self.headline())})

    def smoothing_params(self) -> dict[str, float | int]:
        p = smoothing.PRESETS[self.preset]
        return {"n0": int(self.n0 or p["n0"]), "n": int(self.samples or p["n"]),
                "alpha": float(self.alpha if self.alpha is not None else p["alpha"])}

    def resolved_attack_params(self) -> dict[str, Any]:
        return dict(self.attack_params if self.attack_params is not None else DEFAULT_ATTACK_PARAMS[self.attack])

    def key(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
