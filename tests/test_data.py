from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.data import DATASETS, load_dataset
from bastion.data import images as image_data
from bastion.data.base import _raw
from bastion.errors import DataUnavailableError, UnknownNameError

EXPECTED = {  # name: (train+val+test size, fixed test size or None)
    "mnist": (70_000, 10_000), "fashion-mnist": (70_000, 10_000), "digits": (1_797, None),
    "cifar10-sample": (20, 20), "breast-cancer": (569, None), "phishing": (1_250, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_dataset_loads_with_its_spec(name: str) -> None:
    d = load_dataset(name)
    total, test_size = EXPECTED[name]
    assert len(d.train) + len(d.val) + len(d.test) == total
    if test_size is not None:
        assert len(d.test) == test_size
    for split in (d.train, d.val, d.test):
        if len(split):
            assert split.x.shape[1:] == d.spec.shape and split.x.dtype == torch.float32
            assert split.y.dtype == torch.int64
            assert split.x.min() >= d.spec.lower and split.x.max() <= d.spec.upper
            assert int(split.y.min()) >= 0 and int(split.y.max()) < d.spec.num_classes
    assert d.spec.source and d.spec.licence and d.spec.modality in ("image", "tabular")


def test_registry_is_complete() -> None:
    assert set(EXPECTED) == set(DATASETS)


def test_splits_are_deterministic_and_disjoint() -> None:
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.test.x, c.test.x)
    rows = {tuple(r.tolist()) for r in torch.cat([a.train.x, a.val.x, a.test.x]).flatten(1)}
    assert len(rows) >= 1_797 - 20  # a handful of the 1,797 digits are exact duplicates in the source


def test_unknown_dataset_suggests_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist'"):
        load_dataset("mnits")


def test_missing_fashion_mnist_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(image_data, "FASHION_DIR", tmp_path)
    _raw.cache_clear()
    try:
        with pytest.raises(DataUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
            load_dataset("fashion-mnist")
    finally:
        _raw.cache_clear()


def test_idx_reader_on_a_fixture(tmp_path: Path) -> None:
    import gzip

    images = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes([0, 255, 128, 64, 1, 2, 3, 4])
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3])
    (tmp_path / "i.gz").write_bytes(gzip.compress(images))
    (tmp_path / "l.gz").write_bytes(gzip.compress(labels))
    x, y = image_data.load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz", (1, 2, 2))
    assert x.shape == (2, 1, 2, 2) and y.tolist() == [7, 3]
    assert x[0, 0, 0, 1] == 1.0 and abs(float(x[0, 0, 1, 0]) - 128 / 255) < 1e-6


def test_the_mnist_reader_refuses_a_pickle_that_is_not_arrays() -> None:
    import io
    import pickle

    from bastion.data.images import _ArraysOnly
    from bastion.errors import DataUnavailableError

    with pytest.raises(DataUnavailableError, match="not an array"):
        _ArraysOnly(io.BytesIO(pickle.dumps(print))).load()
    arrays = _ArraysOnly(io.BytesIO(pickle.dumps((np.zeros(3), np.arange(2))))).load()
    assert arrays[0].shape == (3,) and arrays[1].tolist() == [0, 1]
