"""Witches' Brew on MNIST: clean labels, poisons in the L-inf budget, gradient alignment well above its start, and a
victim model that moves the victims towards the intended class."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.witches_brew import alignment, witches_brew


def test_poisons_keep_labels_stay_in_budget_and_align(attacker, mnist, clean_model) -> None:
    eps = 16 / 255
    poisoned = witches_brew(attacker(rate=0.002, target=0), n_victims=2, steps=32, restarts=1)
    idx = poisoned.poisoned
    assert int(idx.sum()) == 12 and torch.equal(poisoned.train.y, mnist.train.y) and (mnist.train.y[idx] == 0).all()
    assert (poisoned.train.x - mnist.train.x).abs().max() <= eps + 1e-6
    assert poisoned.train.x.min() >= 0 and poisoned.train.x.max() <= 1
    assert (poisoned.victims.y == 0).all() and (mnist.test.y[poisoned.info["victim_index"]] != 0).all()
    # the returned poisons really are better aligned (recomputed here, not read back from the attack)
    vx, vy = poisoned.victims.x, poisoned.victims.y
    params = [p for p in clean_model.parameters() if p.requires_grad]
    target_grad = list(torch.autograd.grad(torch.nn.functional.cross_entropy(clean_model(vx), vy), params))
    before = float(alignment(clean_model, mnist.train.x[idx], mnist.train.y[idx], target_grad))
    after = float(alignment(clean_model, poisoned.train.x[idx], mnist.train.y[idx], target_grad))
    assert after < before - 0.1
    assert after == pytest.approx(poisoned.info["alignment_loss"], abs=1e-4)


def test_poisons_pull_the_victims_towards_the_intended_class(attacker, mnist, recipe, clean_model) -> None:
    """From scratch in 2 epochs no victim flips (ASR 0 of 4 with or without the poisons), but the model trained on
    the poisons gives the victims more probability of the intended class than the model trained on the same
    points unperturbed (the clean training set: poisons replace their bases). Measured on the fixture's narrow
    recipe: log-probability gains 1.52, 1.79, 1.07, 0.82 (mean 1.30; recipe seeds 1 and 2: means 0.85 and 1.02);
    random +-0.3 sign noise on the same bases gives -0.32, 0.10, -0.20, -0.29 (mean -0.18), so the bar sits
    between the two (on the default-width CNN: 0.79 against 0.28)."""
    poisoned = witches_brew(attacker(rate=0.02, target=0), n_victims=4, eps=0.3, steps=24, restarts=1)
    assert poisoned.info["alignment_loss"] < 0.5 * poisoned.info["alignment_start"]
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    with torch.no_grad():
        after = torch.log_softmax(model(poisoned.victims.x), 1)[:, 0]
        before = torch.log_softmax(clean_model(poisoned.victims.x), 1)[:, 0]
    assert float((after - before).mean()) > 0.55


def test_augmented_brew_is_reproducible_and_in_budget(attacker, mnist) -> None:
    a = witches_brew(attacker(rate=0.002, target=0, seed=2), steps=8, restarts=2, augment=True)
    b = witches_brew(attacker(rate=0.002, target=0, seed=2), steps=8, restarts=2, augment=True)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.victims.x, b.victims.x)
    assert (a.train.x - mnist.train.x).abs().max() <= 16 / 255 + 1e-6
    assert a.info["alignment_loss"] < a.info["alignment_start"]


@pytest.mark.parametrize("kwargs", [{"eps": 0.0}, {"eps": 1.5}, {"steps": 0}, {"restarts": 0}, {"lr": 0.0},
                                    {"n_victims": 0}, {"victim_class": 0}, {"victim_class": -2}])
def test_bad_parameters_are_one_clear_error(attacker, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        witches_brew(attacker(rate=0.01, target=0), **kwargs)
