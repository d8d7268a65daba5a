"""Data set specs, splits and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is: shape of one sample, classes, value bounds, provenance."""

    name: str
    modality: str
    shape: tuple[int, ...]
    classes: tuple[str, ...]
    lower: float
    upper: float
    source: str
    licence: str
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Split:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    spec: DatasetSpec
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise InvalidInputError(f"Unknown split {name!r}; use train, val or test.")
        return getattr(self, name)


# A raw loader returns (x, y) pairs for the fixed parts the source defines: {"train": ..., "test": ...}
# and optionally "val". Parts it does not define are carved out deterministically from a seed.
RawParts = dict[str, tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class DatasetEntry:
    spec: DatasetSpec
    load: Callable[[], RawParts]


DATASETS: Registry[DatasetEntry] = Registry("dataset", "bastion data list")


def register_dataset(spec: DatasetSpec) -> Callable[[Callable[[], RawParts]], Callable[[], RawParts]]:
    return DATASETS.decorator(spec.name, lambda fn: DatasetEntry(spec, fn))


def _split_off(x: Tensor, y: Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    cut = round(len(y) * fraction)
    rest, held = perm[cut:], perm[:cut]
    return Split(x[rest], y[rest]), Split(x[held], y[held])


@lru_cache(maxsize=8)
def _raw(name: str) -> RawParts:
    return DATASETS.get(name).load()


def load_dataset(name: str, *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    """Load a registered data set with deterministic train/val/test splits derived from ``seed``.

    Fixed splits shipped by the source (e.g. MNIST's test set) are kept; a missing validation or test
    split is drawn from the training part by a seeded permutation.
    """
    entry = DATASETS.get(name)
    parts = _raw(name)
    train = Split(*parts["train"])
    if "test" in parts:
        test = Split(*parts["test"])
    else:
        train, test = _split_off(train.x, train.y, test_fraction, seed)
    if "val" in parts:
        val = Split(*parts["val"])
    else:
        train, val = _split_off(train.x, train.y, val_fraction, seed + 1)
    return Dataset(entry.spec, train, val, test)
