"""Small MNIST pieces and the training recipes shared by the poisoning tests.

``recipe``: 2 epochs of Adam at lr 3e-3 on a narrow CNN (16 and 32 channels, 128 hidden units) on the 6,000
training points: test accuracy 0.932 (recipe seeds 1 and 2: 0.935, 0.928). One fit takes 3-4 s on one thread, where
the default-width CNN at the default lr 1e-3 (``wide_recipe``, accuracy 0.91) takes 10-11 s (both measured on
the 2-core test machine, lightly loaded; 15.7 s for the wide one under heavier load). Every strength test was
re-measured on the narrow recipe at seeds 0-2 and keeps the threshold it had. ``wide_recipe`` stays for the
effects the narrow model loses at seed 0: SIG (ASR 0.11, 0.02, 0.08 at seeds 0-2 against a bar of 0.7), targeted
label flipping (0.16 against 0.6) and fine-pruning (ASR 0.44 left after pruning, against 0.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from bastion.data import load_dataset
from bastion.data.base import DatasetSpec, Split
from bastion.poisoning.base import AttackerView, DefenderView, PoisonedSet
from bastion.poisoning.recipe import Recipe


@dataclass(frozen=True)
class Mnist:
    spec: DatasetSpec
    train: Split  # 6,000 points
    val: Split  # 500 clean points: the defender's
    test: Split  # 2,000 points


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    d = load_dataset("mnist")
    return Mnist(d.spec, Split(d.train.x[:6000], d.train.y[:6000]), Split(d.val.x[:500], d.val.y[:500]),
                 Split(d.test.x[:2000], d.test.y[:2000]))


@pytest.fixture(scope="session")
def recipe() -> Recipe:
    return Recipe(epochs=2, lr=3e-3, arch_kwargs={"width": 16, "hidden": 128})


@pytest.fixture(scope="session")
def clean_model(mnist: Mnist, recipe: Recipe) -> torch.nn.Module:
    return recipe.fit(mnist.train, mnist.val, mnist.spec)


@pytest.fixture(scope="session")
def wide_recipe() -> Recipe:
    """The default CNN (32 and 64 channels) at the default lr: for the few effects the narrow recipe loses."""
    return Recipe(epochs=2)


@pytest.fixture(scope="session")
def wide_clean_model(mnist: Mnist, wide_recipe: Recipe) -> torch.nn.Module:
    return wide_recipe.fit(mnist.train, mnist.val, mnist.spec)


@pytest.fixture
def attacker(mnist: Mnist, clean_model: torch.nn.Module) -> Callable[..., AttackerView]:
    def make(rate: float = 0.05, target: int = 0, seed: int = 0) -> AttackerView:
        return AttackerView(mnist.train, mnist.test, mnist.spec, rate, target, torch.Generator().manual_seed(seed),
                            lambda: clean_model)
    return make


@pytest.fixture
def defender(mnist: Mnist, recipe: Recipe) -> Callable[..., DefenderView]:
    def make(poisoned: PoisonedSet, model: torch.nn.Module | None = None, seed: int = 0) -> DefenderView:
        if model is None:
            model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
        return DefenderView(poisoned.train, mnist.val, mnist.spec, model, recipe.fitter(mnist.val, mnist.spec),
                            torch.Generator().manual_seed(seed))
    return make


@dataclass
class Small:
    """A cheaper case for the contract tests, which check the protocol, not strength: 2,000 training points, a
    1-epoch recipe on a narrow CNN (8 and 16 channels, 64 hidden units: a quarter of the default's width, several
    times cheaper to train and to differentiate through), and one BadNets-poisoned model shared by every defense's
    contract test."""

    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    recipe: Recipe
    clean: torch.nn.Module
    _backdoored: tuple[PoisonedSet, torch.nn.Module] | None = None

    def attacker(self, rate: float, target: int, seed: int) -> AttackerView:
        return AttackerView(self.train, self.test, self.spec, rate, target, torch.Generator().manual_seed(seed),
                            lambda: self.clean)

    def backdoored(self) -> tuple[PoisonedSet, DefenderView]:
        from bastion.poisoning.attacks.badnets import badnets

        if self._backdoored is None:
            poisoned = badnets(self.attacker(0.05, 0, 0))
            self._backdoored = poisoned, self.recipe.fit(poisoned.train, self.val, self.spec)
        poisoned, model = self._backdoored
        return poisoned, DefenderView(poisoned.train, self.val, self.spec, model,
                                      self.recipe.fitter(self.val, self.spec), torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def small(mnist: Mnist) -> Small:
    recipe = Recipe(epochs=1, arch_kwargs={"width": 8, "hidden": 64})
    train, val = Split(mnist.train.x[:2000], mnist.train.y[:2000]), Split(mnist.val.x[:300], mnist.val.y[:300])
    test = Split(mnist.test.x[:500], mnist.test.y[:500])
    return Small(mnist.spec, train, val, test, recipe, recipe.fit(train, val, mnist.spec))
