"""The IDS detectors: the scaling layer against its closed form, every registered detector learning a separable
flow table, seeded determinism, and exact save/load round trips (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.errors import CheckpointError, InvalidInputError, UnknownNameError
from bastion.ids.loaders import load_flows
from bastion.ids.models import (
    IDS_MODELS,
    FlowScaler,
    GradientBoostedDetector,
    build_detector,
    categorical_columns,
    class_weights,
    load_detector,
    predict,
    save_detector,
    train_detector,
)

NEURAL = [n for n in IDS_MODELS.names() if IDS_MODELS.get(n).differentiable]
FIX = Path(__file__).parents[1] / "fixtures" / "ids"


def _flows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow-like rows: protocol code, heavy-tailed duration and bytes, a packet count, a constant; attacks send
    e^4 times more bytes (log-normal, sigma 0.5: the classes are separable in log space)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.stack([rng.choice([6.0, 17.0], n), rng.lognormal(8, 2, n), rng.poisson(5, n) + 1.0,
                  rng.lognormal(4 + 4 * y, 0.5), np.full(n, 3.0)], axis=1)
    return x, y


def test_scaler_matches_its_closed_form() -> None:
    x, _ = _flows(200, 0)
    x = np.concatenate([x, np.linspace(-1, 1, 200)[:, None], (np.arange(200) % 7 == 0)[:, None] * 1.0], axis=1)
    scaler = FlowScaler.fit(x, categorical={0: (6.0, 17.0)})
    # lognormal columns are logged; the count (skew ~0.45), the constant, the signed and the binary ones are not
    assert scaler.log.tolist() == [False, True, False, True, False, False, False]
    z = x.copy()
    z[:, [1, 3]] = np.log1p(x[:, [1, 3]])
    mean, std = z.mean(axis=0), z.std(axis=0)
    std[4] = 1.0  # a constant column keeps unit scale
    expected = np.concatenate([((z - mean) / std)[:, 1:], x[:, [0]] == 6.0, x[:, [0]] == 17.0], axis=1)
    out = scaler(torch.from_numpy(x)).numpy()
    assert out.shape == (200, 8) and scaler.out_features == 8
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(scaler.mean.numpy()[1:], mean[1:])


def test_scaler_never_returns_nan_and_checks_shapes() -> None:
    x, _ = _flows(100, 1)
    scaler = FlowScaler.fit(x)
    assert torch.isfinite(scaler(torch.full((2, 5), -5.0, dtype=torch.float64))).all()
    with pytest.raises(InvalidInputError, match=r"shape \(N, 5\); got \(2, 4\)"):
        scaler(torch.zeros(2, 4))
    with pytest.raises(InvalidInputError, match="finite training rows"):
        FlowScaler.fit(np.array([[np.inf, 1.0]]))


@pytest.mark.parametrize("name", IDS_MODELS.names())
def test_every_detector_learns_a_separable_table(name: str) -> None:
    x, y = _flows(320, 2)
    test_x, test_y = _flows(200, 3)
    model = build_detector(name, x, 2, generator=torch.Generator().manual_seed(0), categorical={0: (6.0, 17.0)})
    if name in NEURAL:  # untrained, it is at chance: the accuracy below is learned
        assert (predict(model, test_x).numpy() == test_y).mean() < 0.6
    model, history = train_detector(model, x, y, epochs=12, batch_size=32, lr=3e-3,
                                    generator=torch.Generator().manual_seed(1))
    accuracy = (predict(model, test_x).numpy() == test_y).mean()
    assert accuracy > 0.9, (name, accuracy, history)
    if name in NEURAL:
        assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("name", NEURAL)
def test_same_seed_same_weights(name: str) -> None:
    x, y = _flows(96, 4)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = build_detector(name, x, 2, generator=torch.Generator().manual_seed(seed))
        train_detector(model, x, y, epochs=2, batch_size=32, generator=torch.Generator().manual_seed(seed))
        return model.state_dict()

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", NEURAL)
def test_save_load_round_trips_the_logits(name: str, tmp_path: Path) -> None:
    x, y = _flows(96, 5)
    model = build_detector(name, x, 2, generator=torch.Generator().manual_seed(0), categorical={0: (6.0, 17.0)},
                           **({"hidden": 16} if name != "mlp" else {"width": 16}))
    train_detector(model, x, y, epochs=1, generator=torch.Generator().manual_seed(0))
    weights = save_detector(model, tmp_path / "det", columns=("a", "b", "c", "d", "e"), classes=("BENIGN", "x"))
    loaded, meta = load_detector(tmp_path / "det.json")
    rows = torch.from_numpy(x)
    assert torch.equal(loaded(rows), model(rows))
    assert meta["classes"] == ["BENIGN", "x"] and meta["arch"] == name and weights.suffix == ".safetensors"
    assert b"pickle" not in weights.read_bytes()[:8]
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_detector(tmp_path / "det")
    info = tmp_path / "det.json"
    info.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not detector metadata bastion wrote"):
        load_detector(info)


def test_gbt_is_a_black_box_answering_probabilities() -> None:
    x, y = _flows(200, 6)
    model = build_detector("gbt", x, 3, generator=torch.Generator().manual_seed(0), max_iter=20)
    assert isinstance(model, GradientBoostedDetector)
    train_detector(model, x, y, generator=torch.Generator().manual_seed(0))
    proba = model.predict_proba(x[:10])
    assert proba.shape == (10, 3) and torch.allclose(proba.sum(1), torch.ones(10, dtype=torch.float64))
    assert (proba[:, 2] == 0).all()  # a class absent from training
    rows = torch.from_numpy(x[:10]).requires_grad_()
    logits = model(rows)
    assert not logits.requires_grad
    assert torch.allclose(logits.softmax(1).double(), proba, atol=1e-6)
    with pytest.raises(InvalidInputError, match="retrained from its seed"):
        save_detector(model, "unused")


def test_class_weights_are_balanced() -> None:
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 3), [4 / 6, 4 / 2, 0.0])


def test_a_loaded_table_feeds_a_detector() -> None:
    table = load_flows(FIX / "cic2018-trafficforml.csv", extra="drop")
    categorical = categorical_columns(table.columns, table.categorical)
    assert categorical == {1: (1.0, 6.0, 17.0)}
    model = build_detector("mlp", table.features, len(table.classes), generator=torch.Generator().manual_seed(0),
                           categorical=categorical)
    assert model(torch.from_numpy(table.features)).shape == (5, len(table.classes))


def test_bad_detector_arguments_are_one_line() -> None:
    x, y = _flows(20, 7)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(UnknownNameError, match="Did you mean 'mlp'"):
        build_detector("mpl", x, 2, generator=g)
    with pytest.raises(InvalidInputError, match="has no parameter 'depthh'"):
        build_detector("mlp", x, 2, generator=g, depthh=3)
    model = build_detector("mlp", x, 2, generator=g)
    with pytest.raises(InvalidInputError, match=r"labels must lie in \[0, 2\)"):
        train_detector(model, x, y + 1, generator=g)
    with pytest.raises(InvalidInputError, match="class_weight='auto'"):
        train_detector(model, x, y, class_weight="auto", generator=g)
