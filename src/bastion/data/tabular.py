"""Tabular data sets: breast cancer (scikit-learn) and phishing websites (river)."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import torch

from bastion.data.base import DatasetSpec, RawParts, register_dataset
from bastion.data.files import package_file


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale each feature to [0, 1] by its range over the whole data set (the feature's domain)."""
    lo, hi = x.min(0), x.max(0)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


@register_dataset(DatasetSpec(
    name="breast-cancer", modality="tabular", shape=(30,), classes=("malignant", "benign"), lower=0.0, upper=1.0,
    source="Wisconsin diagnostic breast cancer (UCI), via scikit-learn", licence="CC BY 4.0",
    description="569 tumours x 30 features, min-max scaled to [0,1].",
))
def breast_cancer() -> RawParts:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return {"train": _pair(minmax(bunch.data), bunch.target)}


@register_dataset(DatasetSpec(
    name="phishing", modality="tabular", shape=(9,), classes=("legitimate", "phishing"), lower=0.0, upper=1.0,
    source="Phishing websites (UCI), shipped inside river==0.26.1", licence="CC BY 4.0",
    description="1,250 websites x 9 features in [0,1]; a real security data set.",
))
def phishing() -> RawParts:
    path = package_file("river", "river/datasets/phishing.csv.gz", install="pip install --no-deps river==0.26.1")
    with gzip.open(path, "rt") as fh:
        rows = list(csv.reader(fh))
    body = np.array(rows[1:], dtype=np.float64)
    return {"train": _pair(body[:, :-1], body[:, -1])}
