"""The adversarially trained zoo models load, carry their recipe and costs, and are robust (PGD, 100 points)."""

from __future__ import annotations

import pytest

from bastion.data import load_dataset
from bastion.defenses.training import robust_accuracy
from bastion.threat import LpThreat
from bastion.zoo import MODELS, load_model

# name, method, data set, eps, clean floor, PGD-10 robust floor (well under the measured values in docs/BENCHMARKS.md)
SHIPPED = [("mnist-cnn-fastat", "fast-at", "mnist", 0.3, 0.95, 0.5),
           ("fashion-cnn-fastat", "fast-at", "fashion-mnist", 0.1, 0.75, 0.5),
           ("mnist-crown-pgdat", "pgd-at", "mnist", 0.3, 0.95, 0.8),
           ("mnist-crown-wide-trades", "trades", "mnist", 0.3, 0.95, 0.85),
           ("mnist-crown-wide-fastat", "fast-at", "mnist", 0.3, 0.95, 0.75),
           ("mnist-crown-wide-atta", "fast-at", "mnist", 0.3, 0.95, 0.85)]


@pytest.mark.parametrize(("name", "method", "dataset", "eps", "clean_floor", "robust_floor"), SHIPPED)
def test_adversarially_trained_zoo_model(name: str, method: str, dataset: str, eps: float, clean_floor: float,
                                         robust_floor: float) -> None:
    assert name in MODELS
    model, meta = load_model(name)
    assert meta.recipe["defense"] == method and meta.recipe["eps"] == eps and meta.dataset == dataset
    assert meta.metrics["cost"]["multiple_of_standard_training"] > 1
    test = load_dataset(dataset).test
    clean, robust = robust_accuracy(model, test.x[:100], test.y[:100], LpThreat("linf", eps), steps=10)
    assert clean >= clean_floor and robust >= robust_floor, (clean, robust)
