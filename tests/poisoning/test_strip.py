"""STRIP on a BadNets model (5% of the MNIST training set, target 0): triggered inputs are rejected, held-out clean
inputs pass at about the chosen false-rejection rate, and the threshold comes from the validation set alone."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.badnets import badnets
from bastion.poisoning.base import AttackerView, DefenderView, DefenseResult, PoisonedSet
from bastion.poisoning.defenses.strip import strip
from bastion.poisoning.metrics import accuracy, attack_success_rate


@pytest.fixture(scope="module")
def case(mnist, recipe) -> tuple[PoisonedSet, DefenderView, DefenseResult]:
    poisoned = badnets(AttackerView(mnist.train, mnist.test, mnist.spec, 0.05, 0, torch.Generator().manual_seed(0),
                                    lambda: None))
    view = DefenderView(poisoned.train, mnist.val, mnist.spec, recipe.fit(poisoned.train, mnist.val, mnist.spec),
                        recipe.fitter(mnist.val, mnist.spec), torch.Generator().manual_seed(0))
    return poisoned, view, strip(view)


def test_rejects_triggered_inputs_at_about_one_percent_false_rejections(case, mnist) -> None:
    poisoned, view, result = case
    assert result.reject is not None and result.model is view.model
    attacked = poisoned.attack_test(mnist.test)
    assert attacked is not None
    triggered, held_out = attacked.x[:200], mnist.test.x[-400:]  # clean inputs the defense never saw
    assert float(result.reject(triggered).float().mean()) > 0.9
    assert float(result.reject(held_out).float().mean()) < 0.05
    assert result.info["frr_on_val"] == pytest.approx(0.01, abs=0.005)
    sub = type(attacked)(attacked.x[:200], attacked.y[:200])
    assert attack_success_rate(view.model, sub, result.reject) < 0.1 < attack_success_rate(view.model, sub)
    clean = type(attacked)(held_out, mnist.test.y[-400:])
    assert accuracy(view.model, clean, result.reject) > accuracy(view.model, clean) - 0.05


def test_same_view_same_decisions(case, mnist) -> None:
    result = case[2]
    x = mnist.test.x[:20]
    assert torch.equal(result.reject(x), result.reject(x))


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"frr": 0.0}, {"frr": 1.0}, {"weight": 0.0}, {"weight": 1.5}])
def test_bad_parameter_is_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        strip(case[1], **kwargs)
