"""Label-consistent backdoor on MNIST: clean labels, bounded poisons, hard examples, and the adversarial
perturbation is what makes the backdoor take."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.label_consistent import four_corner_pattern, label_consistent
from bastion.poisoning.metrics import attack_success_rate, predictions

EPS = 0.3  # the usual MNIST L-inf budget; the paper's CIFAR 16/255 barely hurts the MNIST surrogate


def test_poisons_keep_labels_stay_in_budget_and_are_hard(attacker, mnist, clean_model) -> None:
    poisoned = label_consistent(attacker(rate=0.01, target=0), eps=EPS, steps=20)
    idx = poisoned.poisoned
    assert torch.equal(poisoned.train.y, mnist.train.y) and (mnist.train.y[idx] == 0).all()
    mask, _ = four_corner_pattern(mnist.spec.shape)
    outside = (poisoned.train.x[idx] - mnist.train.x[idx]) * (1 - mask)
    assert outside.abs().max() <= EPS + 1e-6
    assert torch.equal(poisoned.train.x[~idx], mnist.train.x[~idx])
    # the PGD step is what makes them hard: the surrogate gets the poisons wrong, the trigger alone mostly not
    adv_acc = float((predictions(clean_model, poisoned.train.x[idx]) == 0).float().mean())
    plain = label_consistent(attacker(rate=0.01, target=0), eps=0.0)
    plain_acc = float((predictions(clean_model, plain.train.x[plain.poisoned]) == 0).float().mean())
    assert adv_acc < 0.1 < 0.7 < plain_acc


def test_trigger_is_four_full_amplitude_corners(attacker, mnist) -> None:
    poisoned = label_consistent(attacker(rate=0.01), eps=0.0, amplitude=16 / 255)
    x = mnist.test.x[:4]
    stamped = poisoned.trigger(x)  # type: ignore[misc]
    changed = (stamped != x).any(0).any(0)
    assert changed.sum() <= 36 and changed[1:4, 1:4].any() and changed[-4:-1, -4:-1].any()
    assert changed[1:4, -4:-1].any() and changed[-4:-1, 1:4].any()
    values = stamped[..., 1:4, 1:4].unique()
    assert set(values.tolist()) <= {mnist.spec.lower, mnist.spec.upper}
    # reduced amplitude on the poisons: at most 16/255 away from the (unperturbed) originals
    diff = (poisoned.train.x[poisoned.poisoned] - mnist.train.x[poisoned.poisoned]).abs().max()
    assert 0 < diff <= 16 / 255 + 1e-6


def test_adversarial_perturbation_raises_backdoor_success(attacker, mnist, recipe) -> None:
    with_adv = label_consistent(attacker(rate=0.03, target=0), eps=EPS, steps=40)
    without = label_consistent(attacker(rate=0.03, target=0), eps=0.0)
    asr_adv = attack_success_rate(recipe.fit(with_adv.train, mnist.val, mnist.spec), with_adv.attack_test(mnist.test))
    asr_plain = attack_success_rate(recipe.fit(without.train, mnist.val, mnist.spec), without.attack_test(mnist.test))
    assert asr_adv is not None and asr_plain is not None
    assert asr_adv > 0.5 and asr_adv > asr_plain + 0.25


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"eps": 2.0}, {"steps": 0}, {"amplitude": 0.0},
                                    {"amplitude": 1.5}, {"size": 20}])
def test_bad_parameters_are_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        label_consistent(attacker(), **kwargs)
