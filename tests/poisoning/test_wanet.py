"""WaNet: a fixed smooth warp as a backdoor trigger, from a static poisoned set."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.wanet import wanet
from bastion.poisoning.metrics import accuracy, attack_success_rate


def test_wanet_reaches_high_asr_with_a_stronger_warp(mnist, recipe, attacker, clean_model) -> None:
    # measured on the default-width CNN (static poisoned set, 2 epochs, rate 10%, k = 4): the paper's s = 0.5 with
    # noise mode reaches ASR 0.06; s = 4 with noise mode 0.30, s = 8 with noise mode 0.39; s = 4 without noise
    # mode 0.82. On the fixture's narrow recipe, s = 4 without noise mode: 0.88 (clean model 0.004) at accuracy
    # 0.926 against the clean model's 0.9315 (recipe seeds 1 and 2: 0.94 and 0.88)
    poisoned = wanet(attacker(rate=0.1, target=0), s=4.0, cross_ratio=0.0)
    assert not poisoned.info["cross"].any()
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    asr = attack_success_rate(model, poisoned.attack_test(mnist.test))
    clean_asr = attack_success_rate(clean_model, poisoned.attack_test(mnist.test))
    assert asr is not None and clean_asr is not None
    assert asr > 0.6 and clean_asr < 0.05
    assert accuracy(model, mnist.test) > accuracy(clean_model, mnist.test) - 0.06


def test_warp_is_small_smooth_and_label_keeping_in_noise_mode(attacker, mnist) -> None:
    poisoned = wanet(attacker(rate=0.02, target=0))  # the paper's k = 4, s = 0.5, cross_ratio = 2
    bd, cross = poisoned.poisoned, poisoned.info["cross"]
    assert int(cross.sum()) == 2 * int(bd.sum()) and not (bd & cross).any()
    assert torch.equal(poisoned.train.y[cross], mnist.train.y[cross]) and (poisoned.train.y[bd] == 0).all()
    assert not torch.equal(poisoned.train.x[cross], mnist.train.x[cross])
    untouched = ~(bd | cross)
    assert torch.equal(poisoned.train.x[untouched], mnist.train.x[untouched])
    x = mnist.test.x[:16]
    moved = (poisoned.trigger(x) - x).abs()  # type: ignore[misc]
    assert 0 < moved.mean() < 0.05  # imperceptible: a fraction of a pixel's displacement
    grid = poisoned.info["grid"]
    assert grid.shape == (1, 28, 28, 2) and grid.abs().max() <= 1


@pytest.mark.parametrize("kwargs", [{"k": 1}, {"k": 40}, {"s": 0.0}, {"s": -1.0}, {"cross_ratio": -0.5}])
def test_bad_parameter_is_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        wanet(attacker(), **kwargs)


def test_same_seed_same_poison(attacker) -> None:
    a, b, c = wanet(attacker(seed=3)), wanet(attacker(seed=3)), wanet(attacker(seed=4))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.info["grid"], b.info["grid"])
    assert not torch.equal(a.info["grid"], c.info["grid"])
