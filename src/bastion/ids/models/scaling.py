"""The detectors' input layer: raw flow features in, scaled features out, fitted on the training data.

Each numeric column is, when heavy-tailed, mapped by ``log1p`` and then standardized with the training mean and
(population) standard deviation; a categorical column given as one numeric code (the IP protocol number) becomes a
one-hot block. "Heavy-tailed" is decided on the training data: a non-negative column with more than two distinct
values whose sample skewness (Fisher-Pearson g1) exceeds 1, the usual threshold for a highly skewed distribution
(Bulmer, "Principles of Statistics", 1979). Negative inputs to a log column are clamped at 0 first (flow features are
non-negative; the threat enforces it), so the layer never returns NaN. Everything the layer learned is a buffer, so
it is saved with the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError

SKEW_THRESHOLD = 1.0


def heavy_tailed(x: np.ndarray) -> np.ndarray:
    """Per column: non-negative, more than two distinct values, and sample skewness above ``SKEW_THRESHOLD``."""
    centred = x - x.mean(axis=0)
    m2, m3 = (centred**2).mean(axis=0), (centred**3).mean(axis=0)
    skew = np.divide(m3, m2**1.5, out=np.zeros_like(m2), where=m2 > 0)
    distinct = np.array([len(np.unique(x[:, j])) > 2 for j in range(x.shape[1])], dtype=bool)
    return (x.min(axis=0) >= 0) & distinct & (skew > SKEW_THRESHOLD)


class FlowScaler(nn.Module):
    """``log1p`` on the log columns, then ``(z - mean) / std``; categorical codes one-hot, appended at the end."""

    def __init__(self, dim: int, categorical: Mapping[int, Sequence[float]] | None = None) -> None:
        super().__init__()
        categorical = {int(k): tuple(float(v) for v in vals) for k, vals in (categorical or {}).items()}
        if any(not 0 <= k < dim for k in categorical):
            raise InvalidInputError(f"categorical column indices must lie in [0, {dim}); got {sorted(categorical)}.")
        self.dim, self.categorical = dim, categorical
        numeric = [j for j in range(dim) if j not in categorical]
        owner = [k for k, vals in sorted(categorical.items()) for _ in vals]
        values = [v for _, vals in sorted(categorical.items()) for v in vals]
        self.register_buffer("log", torch.zeros(dim, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("std", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("onehot_owner", torch.tensor(owner, dtype=torch.long))
        self.register_buffer("onehot_values", torch.tensor(values, dtype=torch.float64))

    @property
    def out_features(self) -> int:
        return len(self.numeric) + len(self.onehot_values)

    @classmethod
    def fit(cls, x: np.ndarray | Tensor, *, categorical: Mapping[int, Sequence[float]] | None = None,
            log: str | Sequence[bool] = "auto") -> FlowScaler:
        """Fit on training rows ``x`` (N, D) in raw units. ``log``: ``"auto"`` (the skewness rule), ``"none"``,
        or one boolean per column."""
        data = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
        if data.ndim != 2 or len(data) == 0 or not np.isfinite(data).all():
            raise InvalidInputError(f"the scaler needs finite training rows of shape (N, D); got shape {data.shape} "
                                    "(load the flows with nonfinite='drop' or 'zero').")
        scaler = cls(data.shape[1], categorical)
        mask = _log_mask(data, log)
        mask[list(scaler.categorical)] = False
        z = np.where(mask, np.log1p(np.clip(data, 0.0, None)), data)
        std = z.std(axis=0)
        scaler.log.copy_(torch.from_numpy(mask))
        scaler.mean.copy_(torch.from_numpy(z.mean(axis=0)))
        scaler.std.copy_(torch.from_numpy(np.where(std > 0, std, 1.0)))
        return scaler

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"the detector takes flows of shape (N, {self.dim}); got {tuple(x.shape)}.")
        x = x.to(self.mean.dtype)
        z = torch.where(self.log, torch.log1p(x.clamp(min=0)), x)
        z = ((z - self.mean) / self.std)[:, self.numeric]
        onehot = (x[:, self.onehot_owner] == self.onehot_values).to(z.dtype)
        return torch.cat([z, onehot], dim=1)


def _log_mask(data: np.ndarray, log: str | Sequence[bool]) -> np.ndarray:
    if isinstance(log, str):
        if log not in ("auto", "none"):
            raise InvalidInputError(f"log={log!r} is not 'auto', 'none' or one boolean per column; pass one of them.")
        return heavy_tailed(data) if log == "auto" else np.zeros(data.shape[1], dtype=bool)
    mask = np.asarray(log, dtype=bool)
    if mask.shape != (data.shape[1],):
        raise InvalidInputError(f"log has {mask.size} entries but the flows have {data.shape[1]} columns; give one "
                                "boolean per column.")
    return mask.copy()
