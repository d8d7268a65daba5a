"""Anti-Backdoor Learning on BadNets (5%, target 0) on the MNIST fixture."""

from __future__ import annotations

import dataclasses

import pytest
from badnets_case import badnets_case, view_of

from bastion.errors import InvalidInputError
from bastion.poisoning.defenses.abl import abl
from bastion.poisoning.metrics import accuracy


@pytest.fixture(scope="module")
def case(mnist, recipe):
    poisoned, model = badnets_case(mnist, recipe)
    view = dataclasses.replace(view_of(mnist, recipe, poisoned.train, model), model=None)
    # ABL builds its own model: the session recipe's narrow CNN and learning rate, as a pipeline would configure it
    return poisoned, model, view, abl(view, arch_kwargs=recipe.arch_kwargs, lr=recipe.lr)


def test_isolates_one_percent_and_keeps_clean_accuracy(case, mnist) -> None:
    poisoned, model, _view, result = case
    assert result.flagged is not None and result.scores is not None
    assert int(result.flagged.sum()) == round(0.01 * len(poisoned.train))
    assert result.scores.shape == (len(poisoned.train),)
    # measured: test accuracy 0.941 (undefended 0.9215); recipe seeds 1 and 2: 0.9485 (0.9365), 0.943 (0.915)
    assert accuracy(result.model, mnist.test) > accuracy(model, mnist.test) - 0.03


@pytest.mark.parametrize("kwargs", [{"gamma": -0.1}, {"isolation_ratio": 0.0}, {"isolation_ratio": 1.0},
                                    {"isolation_epochs": 0}, {"epochs": -1}, {"unlearn_lr": 0.0},
                                    {"batch_size": 0}])
def test_bad_parameters_are_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        abl(case[2], **kwargs)
