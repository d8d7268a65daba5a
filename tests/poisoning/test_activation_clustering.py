"""Activation clustering on BadNets at 5% of the MNIST training set (all-to-one, target 0): the target class is the
one declared poisoned, its small cluster is the poison, the retrained model mostly loses the backdoor, and a clean
set has no class declared poisoned."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from badnets_case import badnets_case, view_of

from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView, DefenseResult, PoisonedSet
from bastion.poisoning.defenses.activation_clustering import activation_clustering
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
    return Case(poisoned, view, activation_clustering(view))


def test_poisoned_points_score_above_clean_ones(case) -> None:
    auc = detection(case.result.scores, case.result.flagged, case.poisoned.poisoned)["auc"]
    assert auc is not None and auc > 0.85


def test_flags_the_small_cluster_of_the_target_class_only(case) -> None:
    det = detection(case.result.scores, case.result.flagged, case.poisoned.poisoned)
    assert det["tpr"] is not None and det["fpr"] is not None
    assert det["tpr"] > 0.85 and det["fpr"] < 0.01
    assert case.result.info["poisoned_classes"] == [0]
    assert case.result.info["relative_size"][0] <= 0.35 < min(v for c, v in case.result.info["relative_size"].items()
                                                               if c != 0)


def test_retrained_model_loses_most_of_the_backdoor(case, mnist, clean_model) -> None:
    attacked = case.poisoned.attack_test(mnist.test)
    before = attack_success_rate(case.view.model, attacked)
    after = attack_success_rate(case.result.model, attacked)
    assert before is not None and after is not None
    assert before > 0.9 and after < before - 0.4  # a few missed poisoned points keep part of the backdoor alive
    assert accuracy(case.result.model, mnist.test) > accuracy(clean_model, mnist.test) - 0.02


def test_clean_set_has_no_poisoned_class(mnist, recipe, clean_model) -> None:
    view = view_of(mnist, recipe, mnist.train, clean_model)
    result = activation_clustering(view)
    assert result.info["poisoned_classes"] == []
    assert result.flagged is not None and int(result.flagged.sum()) == 0


@pytest.mark.parametrize("kwargs", [{"size_threshold": 0.0}, {"size_threshold": 0.6}, {"dims": 1},
                                    {"reduce": "tsne"}])
def test_bad_parameter_is_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        activation_clustering(case.view, **kwargs)
