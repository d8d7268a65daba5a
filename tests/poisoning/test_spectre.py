"""SPECTRE on BadNets at 5% of the MNIST training set (all-to-one, target 0): the poisoned points score above the
clean ones, the flagged set is the poison, the retrained model loses the backdoor, a clean set is left alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from badnets_case import badnets_case, view_of

from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView, DefenseResult, PoisonedSet
from bastion.poisoning.defenses.spectre import spectre
from bastion.poisoning.metrics import accuracy, attack_success_rate, detection


@dataclass
class Case:
    poisoned: PoisonedSet
    view: DefenderView
    result: DefenseResult


@pytest.fixture(scope="module")
def case(mnist, recipe) -> Case:
    poisoned, model = badnets_case(mnist, recipe)
    view = view_of(mnist, recipe, poisoned.train, model)
    return Case(poisoned, view, spectre(view))


def test_poisoned_points_score_above_clean_ones(case) -> None:
    auc = detection(case.result.scores, case.result.flagged, case.poisoned.poisoned)["auc"]
    assert auc is not None and auc > 0.95


def test_flags_the_poison_and_only_the_target_class(case) -> None:
    det = detection(case.result.scores, case.result.flagged, case.poisoned.poisoned)
    assert det["tpr"] is not None and det["fpr"] is not None
    assert det["tpr"] > 0.9 and det["fpr"] < 0.02
    assert case.result.info["poisoned_classes"] == [0]


def test_retrained_model_loses_the_backdoor(case, mnist, clean_model) -> None:
    attacked = case.poisoned.attack_test(mnist.test)
    before = attack_success_rate(case.view.model, attacked)
    after = attack_success_rate(case.result.model, attacked)
    assert before is not None and after is not None
    assert before > 0.9 and after < 0.1
    assert accuracy(case.result.model, mnist.test) > accuracy(clean_model, mnist.test) - 0.02


def test_clean_set_is_left_alone(mnist, recipe, clean_model) -> None:
    view = view_of(mnist, recipe, mnist.train, clean_model)
    result = spectre(view)
    assert result.info["poisoned_classes"] == []
    assert result.flagged is not None and int(result.flagged.sum()) == 0
    assert max(result.info["above_validation_max"].values()) < 0.1


@pytest.mark.parametrize("kwargs", [{"eps": 0.0}, {"eps": 0.6}, {"class_threshold": 1.0}, {"alpha": -1.0},
                                    {"k": 0}, {"iterations": 0}])
def test_bad_parameter_is_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        spectre(case.view, **kwargs)
