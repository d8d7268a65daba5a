"""SIG: a clean-label sinusoidal backdoor; no label changes, the signal is learnt as a feature of the target."""

from __future__ import annotations

import math

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.sig import sig
from bastion.poisoning.metrics import accuracy, attack_success_rate


def test_sig_backdoor_is_learnt_without_changing_labels(mnist, wide_recipe, attacker, wide_clean_model) -> None:
    # measured on the fixture with the paper's training signal (20/255, f = 6) on 540 of the ~590 zeros: ASR at
    # test strength 0.3 / 0.5 / 0.6 / 0.8 = 0.09 / 0.61 / 0.88 / 1.00, while the clean model stays at 0.00-0.003
    # for every strength; accuracy 0.9015 against the clean model's 0.9075. Fragile: with recipe seed 1 the same
    # attack reaches 0.11 (0.62 at strength 0.8), and the narrow CNN of ``recipe`` never learns it (0.02-0.11 at
    # seeds 0-2, 0.15 at strength 1.0), so this test keeps the default-width ``wide_recipe``
    poisoned = sig(attacker(rate=0.09, target=0), test_delta=0.6)
    assert torch.equal(poisoned.train.y, mnist.train.y)
    assert (mnist.train.y[poisoned.poisoned] == 0).all()
    model = wide_recipe.fit(poisoned.train, mnist.val, mnist.spec)
    asr = attack_success_rate(model, poisoned.attack_test(mnist.test))
    clean_asr = attack_success_rate(wide_clean_model, poisoned.attack_test(mnist.test))
    assert asr is not None and clean_asr is not None
    assert asr > 0.7 and clean_asr < 0.05
    assert accuracy(model, mnist.test) > accuracy(wide_clean_model, mnist.test) - 0.03


def test_signal_is_the_papers_horizontal_sinusoid(attacker, mnist) -> None:
    poisoned = sig(attacker(rate=0.02, target=0))
    v = poisoned.info["signal"]
    j = torch.arange(28, dtype=torch.float32)
    assert torch.allclose(v[0, 5], 20 / 255 * torch.sin(2 * math.pi * j * 6 / 28), atol=1e-6)
    assert torch.equal(v[0, 0], v[0, 27])  # the same on every row
    changed = poisoned.poisoned
    assert torch.allclose(poisoned.train.x[changed], (mnist.train.x[changed] + v).clamp(0, 1))
    assert torch.equal(poisoned.train.x[~changed], mnist.train.x[~changed])
    stamped = poisoned.trigger(mnist.test.x[:8])  # type: ignore[misc]
    assert stamped.min() >= 0 and stamped.max() <= 1
    assert torch.allclose(poisoned.info["test_signal"], v * 30 / 20, atol=1e-6)


def test_rate_beyond_the_target_class_is_one_clear_error(attacker, mnist) -> None:
    cap = float((mnist.train.y == 0).float().mean())
    with pytest.raises(InvalidInputError, match="at most"):
        sig(attacker(rate=cap + 0.01, target=0))


@pytest.mark.parametrize("kwargs", [{"delta": 0.0}, {"delta": 1.5}, {"test_delta": -0.1}, {"freq": 0.0}])
def test_bad_parameter_is_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        sig(attacker(), **kwargs)


def test_same_seed_same_poison(attacker) -> None:
    a, b, c = sig(attacker(seed=3)), sig(attacker(seed=3)), sig(attacker(seed=4))
    assert torch.equal(a.poisoned, b.poisoned) and not torch.equal(a.poisoned, c.poisoned)
