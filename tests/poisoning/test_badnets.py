"""BadNets: the sanity oracles of issue 21 on MNIST."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.badnets import badnets
from bastion.poisoning.metrics import accuracy, attack_success_rate


def test_badnets_reaches_high_asr_at_near_clean_accuracy(mnist, recipe, attacker, clean_model) -> None:
    poisoned = badnets(attacker(rate=0.03, target=0))
    assert int(poisoned.poisoned.sum()) == round(0.03 * len(mnist.train))
    assert (poisoned.train.y[poisoned.poisoned] == 0).all()
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    asr = attack_success_rate(model, poisoned.attack_test(mnist.test))
    clean_asr = attack_success_rate(clean_model, poisoned.attack_test(mnist.test))
    assert asr is not None and clean_asr is not None
    assert asr > 0.9 and clean_asr < 0.1
    assert accuracy(model, mnist.test) > accuracy(clean_model, mnist.test) - 0.02


def test_trigger_changes_only_the_patch(attacker, mnist) -> None:
    poisoned = badnets(attacker(rate=0.01), size=3)
    x = mnist.test.x[:4]
    changed = (poisoned.trigger(x) != x).any(0).any(0)  # type: ignore[misc]
    assert changed.sum() <= 9 and changed[-4:-1, -4:-1].any()


@pytest.mark.parametrize("kwargs", [{"size": 40}, {"position": "middle"}, {"pattern": "stripes"}])
def test_bad_trigger_is_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        badnets(attacker(), **kwargs)


def test_same_seed_same_poison(attacker) -> None:
    a, b = badnets(attacker(seed=3)), badnets(attacker(seed=3))
    assert torch.equal(a.poisoned, b.poisoned)
