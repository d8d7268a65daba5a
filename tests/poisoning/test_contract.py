"""Every registered poisoning attack and defense, without per-algorithm test code: they run on a small MNIST
case, return what the protocol says, are reproducible from the seed, and no defense can receive the test set or
the attack's ground truth."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from bastion.poisoning import POISON_ATTACKS, POISON_DEFENSES, DefenderView, DefenseResult, PoisonedSet
from bastion.poisoning.base import AttackerView

ATTACKS = POISON_ATTACKS.names()
DEFENSES = POISON_DEFENSES.names()


def test_registries_hold_the_issues_algorithms() -> None:
    assert {"label-flip", "label-flip-targeted", "badnets", "blended", "sig", "wanet", "feature-collision",
            "label-consistent", "witches-brew"} <= set(ATTACKS)
    assert {"spectral-signatures", "activation-clustering", "fine-pruning", "neural-cleanse", "abl",
            "strip"} <= set(DEFENSES)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_follows_the_protocol(name: str, small) -> None:
    spec = POISON_ATTACKS.get(name)
    params = list(inspect.signature(spec.fn).parameters.values())
    assert params[0].annotation in (AttackerView, "AttackerView")
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
               for p in params[1:]), f"{name}: parameters after the view must be keyword-only with defaults"
    a, b = (spec.fn(small.attacker(rate=0.02, target=1, seed=5)) for _ in range(2))
    mnist = small
    assert isinstance(a, PoisonedSet)
    assert a.train.x.shape[1:] == mnist.train.x.shape[1:] and len(a.train) == len(a.poisoned)
    assert 0 < int(a.poisoned.sum()) <= max(1, round(0.02 * len(mnist.train))) + 1
    assert torch.equal(a.poisoned, b.poisoned) and torch.equal(a.train.x, b.train.x), "not reproducible from seed"
    assert a.train.x.min() >= mnist.spec.lower - 1e-6 and a.train.x.max() <= mnist.spec.upper + 1e-6
    attacked = a.attack_test(mnist.test)
    if spec.kind != "availability":
        assert attacked is not None and len(attacked) > 0
        assert attacked.x.min() >= mnist.spec.lower - 1e-6 and attacked.x.max() <= mnist.spec.upper + 1e-6


def test_defender_view_has_no_test_set_nor_ground_truth() -> None:
    names = {f.name for f in dataclasses.fields(DefenderView)}
    assert names == {"train", "val", "spec", "model", "fit", "generator"}


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_receives_only_the_defenders_view(name: str) -> None:
    params = list(inspect.signature(POISON_DEFENSES.get(name).fn).parameters.values())
    assert params[0].annotation in (DefenderView, "DefenderView")
    for p in params[1:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        assert not isinstance(p.default, torch.Tensor | PoisonedSet), f"{name}.{p.name} smuggles data in"
        assert "test" not in p.name, f"{name}.{p.name}: a defense never gets test data"


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_follows_the_protocol_and_never_loads_data(name: str, small, monkeypatch) -> None:
    """Run on the view alone: loading any registered data set (and so the test split) during it fails."""
    from bastion.data import base

    spec = POISON_DEFENSES.get(name)
    poisoned, view = small.backdoored()
    if spec.stage == "train":
        view = dataclasses.replace(view, model=None)

    def refuse(*_a, **_k):
        raise AssertionError(f"defense {name} loaded a data set itself")

    # a defense that builds its own model (ABL) is given the small recipe's narrow architecture, as a pipeline would
    kwargs = {"arch_kwargs": small.recipe.arch_kwargs} if "arch_kwargs" in spec.defaults else {}
    monkeypatch.setattr(base.DATASETS, "get", refuse)
    result = spec.fn(view, **kwargs)
    monkeypatch.undo()
    assert isinstance(result, DefenseResult) and isinstance(result.model, torch.nn.Module)
    if spec.stage == "detect":
        assert result.scores is not None and result.scores.shape == (len(poisoned.train),)
        assert result.flagged is not None and result.flagged.dtype == torch.bool
    if spec.stage == "filter":
        assert result.reject is not None
        assert result.reject(small.test.x[:10]).shape == (10,)


def test_a_defense_cannot_declare_a_test_data_parameter() -> None:
    from bastion.poisoning import register_poison_defense

    with pytest.raises(ValueError, match="test data"):
        @register_poison_defense("peeking", stage="detect", paper="none")
        def peeking(view: DefenderView, *, test_fraction: float = 0.1) -> DefenseResult:
            raise AssertionError("never called")
    assert "peeking" not in POISON_DEFENSES
