from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import CheckpointError, UnknownNameError
from bastion.zoo import ARCHITECTURES, MODELS, build_model, load_model
from bastion.zoo.train import accuracy


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_image_architectures_build_for_each_size(arch: str, shape: tuple[int, ...]) -> None:
    model = build_model(arch, shape, 10).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_tabular_mlp() -> None:
    assert build_model("tabular-mlp", (30,), 2)(torch.rand(5, 30)).shape == (5, 2)
    assert "tabular-mlp" in ARCHITECTURES


def test_checkpoint_round_trip_and_metadata(digits_checkpoint: Path) -> None:
    model, meta = load_model(str(digits_checkpoint))
    info = json.loads(digits_checkpoint.with_suffix(".json").read_text())
    assert info["arch"] == "cnn" and info["dataset"] == "digits" and info["seed"] == 0
    assert info["recipe"]["method"] == "standard" and info["torch_version"] and len(info["sha256"]) == 64
    assert meta.metrics["test_accuracy"] == pytest.approx(accuracy(model, load_dataset("digits").test))
    assert meta.metrics["test_accuracy"] > 0.85


def test_corrupt_checkpoint_is_refused(digits_checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "bad"
    shutil.copy(digits_checkpoint.with_suffix(".json"), target.with_suffix(".json"))
    raw = bytearray(digits_checkpoint.with_suffix(".safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.with_suffix(".safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(str(target))
    target.with_suffix(".safetensors").write_bytes(b"not a safetensors file")
    from bastion.zoo import load_checkpoint

    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(target, verify=False)


def test_mismatched_checkpoint_is_refused(digits_checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "mismatch"
    shutil.copy(digits_checkpoint.with_suffix(".safetensors"), target.with_suffix(".safetensors"))
    info = json.loads(digits_checkpoint.with_suffix(".json").read_text())
    info["arch"] = "mlp"
    target.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="does not fit architecture 'mlp'"):
        load_model(str(target))


def test_missing_checkpoint_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(str(tmp_path / "nothing.safetensors"))
    with pytest.raises(UnknownNameError, match="Unknown model"):
        load_model("mnist-cnnn")


def test_shipped_models_load_and_are_accurate() -> None:
    mnist = load_dataset("mnist").test.take(2000)
    fashion = load_dataset("fashion-mnist").test.take(2000)
    for name, split, floor in [("mnist-cnn", mnist, 0.98), ("ccexam-mnist", mnist, 0.98),
                               ("fashion-cnn", fashion, 0.88)]:
        model, _meta = load_model(name)
        assert not model.training
        assert accuracy(model, split) > floor, name
    assert set(MODELS) >= {"mnist-cnn", "fashion-cnn", "ccexam-mnist"}


def test_ccexam_matches_its_reported_accuracy() -> None:
    model, _ = load_model("ccexam-mnist")
    assert accuracy(model, load_dataset("mnist").test) == pytest.approx(0.9905, abs=1e-4)


def test_checkpoint_names_with_dots_keep_the_whole_name(digits_checkpoint: Path, tmp_path: Path) -> None:
    from bastion.zoo import save_checkpoint

    model, meta = load_model(str(digits_checkpoint))
    save_checkpoint(model, tmp_path / "gauss-0.25", meta)
    save_checkpoint(model, tmp_path / "gauss-0.5", meta)
    assert {p.name for p in tmp_path.iterdir()} == {"gauss-0.25.safetensors", "gauss-0.25.json",
                                                   "gauss-0.5.safetensors", "gauss-0.5.json"}
    assert load_model(str(tmp_path / "gauss-0.25"))[1].arch == "cnn"


def test_training_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    from bastion.zoo.train import TrainConfig, train_and_save

    before = torch.random.get_rng_state()
    train_and_save("mlp", "digits", tmp_path / "m", TrainConfig(epochs=1, seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)
