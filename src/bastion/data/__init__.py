"""Offline data sets, one registry. ``load_dataset(name, seed=...)`` returns tensors with a spec."""

from bastion.data import images, tabular  # noqa: F401  (import registers)
from bastion.data.base import DATASETS, Dataset, DatasetSpec, Split, load_dataset, register_dataset

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "Split", "load_dataset", "register_dataset"]
