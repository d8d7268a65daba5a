"""Blended: a noise key blended at alpha = 0.2 into 2% of MNIST becomes a backdoor."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.blended import blended
from bastion.poisoning.metrics import accuracy, attack_success_rate


def test_blended_reaches_high_asr_at_near_clean_accuracy(mnist, recipe, attacker, clean_model) -> None:
    # measured on the fixture at the paper's alpha = 0.2, rate 2%: ASR 0.98 (clean model 0.003), accuracy
    # 0.9285 against the clean model's 0.9315 (recipe seeds 1 and 2: ASR 1.00 and 0.97)
    poisoned = blended(attacker(rate=0.02, target=0))
    assert int(poisoned.poisoned.sum()) == round(0.02 * len(mnist.train))
    assert (poisoned.train.y[poisoned.poisoned] == 0).all()
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    asr = attack_success_rate(model, poisoned.attack_test(mnist.test))
    clean_asr = attack_success_rate(clean_model, poisoned.attack_test(mnist.test))
    assert asr is not None and clean_asr is not None
    assert asr > 0.85 and clean_asr < 0.05
    assert accuracy(model, mnist.test) > accuracy(clean_model, mnist.test) - 0.03


def test_trigger_is_the_blend_with_the_key(attacker, mnist) -> None:
    poisoned = blended(attacker(), alpha=0.3)
    key, x = poisoned.info["key_pattern"], mnist.test.x[:8]
    assert key.shape == mnist.spec.shape and key.min() >= 0 and key.max() <= 1 and key.std() > 0.2
    assert torch.allclose(poisoned.trigger(x), 0.7 * x + 0.3 * key)  # type: ignore[misc]
    changed = poisoned.poisoned
    assert torch.allclose(poisoned.train.x[changed], 0.7 * mnist.train.x[changed] + 0.3 * key)
    assert torch.equal(poisoned.train.x[~changed], mnist.train.x[~changed])


def test_pattern_seed_fixes_the_key_across_poison_draws(attacker) -> None:
    a, b = blended(attacker(seed=1), pattern_seed=7), blended(attacker(seed=2), pattern_seed=7)
    assert torch.equal(a.info["key_pattern"], b.info["key_pattern"]) and not torch.equal(a.poisoned, b.poisoned)
    c, d = blended(attacker(seed=1)), blended(attacker(seed=2))
    assert not torch.equal(c.info["key_pattern"], d.info["key_pattern"])


@pytest.mark.parametrize("alpha", [0.0, -0.2, 1.5])
def test_bad_alpha_is_one_clear_error(attacker, alpha) -> None:
    with pytest.raises(InvalidInputError, match="alpha"):
        blended(attacker(), alpha=alpha)


def test_same_seed_same_poison(attacker) -> None:
    a, b = blended(attacker(seed=3)), blended(attacker(seed=3))
    assert torch.equal(a.poisoned, b.poisoned) and torch.equal(a.train.x, b.train.x)
