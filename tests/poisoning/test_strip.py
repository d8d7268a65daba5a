"""STRIP on a BadNets model (5% of the MNIST training set, target 0): triggered inputs are rejected, held-out clean
inputs pass at about the chosen false-rejection rate, and the threshold comes from the validation set alone."""

from __future__ import annotations

import pytest
import torch
from badnets_case import badnets_case, view_of

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView, DefenseResult, PoisonedSet
from bastion.poisoning.defenses.strip import strip
from bastion.poisoning.metrics import accuracy, attack_success_rate


@pytest.fixture(scope="module")
def case(mnist, recipe) -> tuple[PoisonedSet, DefenderView, DefenseResult]:
    poisoned, model = badnets_case(mnist, recipe)
    view = view_of(mnist, recipe, poisoned.train, model)
    return poisoned, view, strip(view)


def test_rejects_triggered_inputs_at_about_one_percent_false_rejections(case, mnist) -> None:
    poisoned, view, result = case
    assert result.reject is not None and result.model is view.model
    attacked = poisoned.attack_test(mnist.test)
    assert attacked is not None
    triggered = Split(attacked.x[:200], attacked.y[:200])
    held_out = Split(mnist.test.x[-400:], mnist.test.y[-400:])  # clean inputs the defense never saw
    rejected_triggered, rejected_clean = result.reject(triggered.x), result.reject(held_out.x)
    assert float(rejected_triggered.float().mean()) > 0.9
    assert float(rejected_clean.float().mean()) < 0.05
    assert result.info["frr_on_val"] == pytest.approx(0.01, abs=0.005)
    asr_filtered = attack_success_rate(view.model, triggered, lambda _x: rejected_triggered)
    asr = attack_success_rate(view.model, triggered)
    assert asr_filtered is not None and asr is not None
    assert asr_filtered < 0.1 and asr > 0.9
    assert accuracy(view.model, held_out, lambda _x: rejected_clean) > accuracy(view.model, held_out) - 0.05


def test_same_view_same_decisions(case, mnist) -> None:
    result = case[2]
    x = mnist.test.x[:20]
    assert torch.equal(result.reject(x), result.reject(x))


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"frr": 0.0}, {"frr": 1.0}, {"weight": 0.0}, {"weight": 1.5}])
def test_bad_parameter_is_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        strip(case[1], **kwargs)
