"""Label flipping: random flips cost clean accuracy, targeted flips move the source class to the target."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.label_flip import label_flip, label_flip_targeted
from bastion.poisoning.metrics import accuracy, attack_success_rate


def test_random_flipping_lowers_clean_accuracy(mnist, recipe, attacker, clean_model) -> None:
    # measured on the fixture: 0.9315 clean, 0.763 after flipping 40% of the labels (drop 0.17; seed 0 of the
    # narrow recipe; the default-width CNN: 0.9075 -> 0.8045)
    poisoned = label_flip(attacker(rate=0.4))
    assert poisoned.attack_test(mnist.test) is None
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    assert accuracy(model, mnist.test) < accuracy(clean_model, mnist.test) - 0.05


def test_random_flips_go_to_every_other_class_and_only_there(attacker, mnist) -> None:
    poisoned = label_flip(attacker(rate=0.4))
    old, new = mnist.train.y, poisoned.train.y
    assert int(poisoned.poisoned.sum()) == round(0.4 * len(old))
    assert torch.equal(poisoned.poisoned, old != new)
    assert torch.equal(poisoned.train.x, mnist.train.x)
    for c in range(10):
        went_to = new[poisoned.poisoned & (old == c)].unique().tolist()
        assert sorted(went_to) == [k for k in range(10) if k != c]


def test_targeted_flipping_sends_the_source_class_to_the_target(mnist, wide_recipe, attacker,
                                                                 wide_clean_model) -> None:
    # measured on the fixture: 480 of the 1s relabelled 0 -> 83% of the test 1s classified 0 (clean model: 0%).
    # Fragile: recipe seeds 1 and 2 give 0.95 and 0.37 on this default-width CNN, and the narrow CNN of
    # ``recipe`` gives 0.16 / 0.96 / 0.31 at seeds 0-2, so this test keeps ``wide_recipe``.
    poisoned = label_flip_targeted(attacker(rate=0.08, target=0))
    assert poisoned.source == 1 and poisoned.target == 0
    assert (mnist.train.y[poisoned.poisoned] == 1).all() and (poisoned.train.y[poisoned.poisoned] == 0).all()
    model = wide_recipe.fit(poisoned.train, mnist.val, mnist.spec)
    asr = attack_success_rate(model, poisoned.attack_test(mnist.test))
    clean_asr = attack_success_rate(wide_clean_model, poisoned.attack_test(mnist.test))
    assert asr is not None and clean_asr is not None
    assert asr > 0.6 and clean_asr < 0.05


@pytest.mark.parametrize("kwargs", [{"source": 0}, {"source": 10}, {"source": -1}])
def test_bad_source_is_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        label_flip_targeted(attacker(target=0), **kwargs)


def test_more_flips_than_the_source_class_has_is_one_clear_error(attacker) -> None:
    with pytest.raises(InvalidInputError, match="lower the poison rate"):
        label_flip_targeted(attacker(rate=0.2, target=0), source=1)


def test_same_seed_same_flips(attacker) -> None:
    a, b, c = label_flip(attacker(seed=3)), label_flip(attacker(seed=3)), label_flip(attacker(seed=4))
    assert torch.equal(a.train.y, b.train.y) and not torch.equal(a.train.y, c.train.y)
    t1, t2 = label_flip_targeted(attacker(seed=3)), label_flip_targeted(attacker(seed=3))
    assert torch.equal(t1.poisoned, t2.poisoned)
