"""Anti-Backdoor Learning on BadNets (5%, target 0) on the MNIST fixture."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.badnets import badnets
from bastion.poisoning.base import AttackerView, DefenderView
from bastion.poisoning.defenses.abl import abl
from bastion.poisoning.metrics import accuracy, attack_success_rate, detection


@pytest.fixture(scope="module")
def case(mnist, recipe, clean_model):
    poisoned = badnets(AttackerView(mnist.train, mnist.test, mnist.spec, 0.05, 0, torch.Generator().manual_seed(0),
                                    lambda: clean_model))
    model = recipe.fit(poisoned.train, mnist.val, mnist.spec)
    view = DefenderView(poisoned.train, mnist.val, mnist.spec, None, recipe.fitter(mnist.val, mnist.spec),
                        torch.Generator().manual_seed(0))
    return poisoned, model, view, abl(view)


def test_isolates_one_percent_and_keeps_clean_accuracy(case, mnist) -> None:
    poisoned, model, _view, result = case
    assert result.flagged is not None and result.scores is not None
    assert int(result.flagged.sum()) == round(0.01 * len(poisoned.train))
    assert result.scores.shape == (len(poisoned.train),)
    # measured: test accuracy 0.93 (undefended 0.89)
    assert accuracy(result.model, mnist.test) > accuracy(model, mnist.test) - 0.03


@pytest.mark.xfail(strict=False, reason="does not hold on the MNIST fixture: measured isolation precision 0.08, "
                   "AUC 0.62 (poisoned points' loss median 0.03 under LGA, but the 1% easiest clean digits sit "
                   "below 0.01); see the report")
def test_isolated_points_are_mostly_poisoned(case) -> None:
    poisoned, _model, _view, result = case
    precision = float((result.flagged & poisoned.poisoned).sum()) / int(result.flagged.sum())
    assert precision > 0.5
    assert detection(result.scores, result.flagged, poisoned.poisoned)["auc"] > 0.9


@pytest.mark.xfail(strict=False, reason="follows from the isolation failing: measured ASR 0.996 after ABL "
                   "(undefended 0.98); see the report")
def test_abl_drops_the_attack_success_rate(case, mnist) -> None:
    poisoned, model, _view, result = case
    attacked = poisoned.attack_test(mnist.test)
    asr, fixed_asr = attack_success_rate(model, attacked), attack_success_rate(result.model, attacked)
    assert asr is not None and fixed_asr is not None and asr > 0.9 and fixed_asr < 0.2


@pytest.mark.parametrize("kwargs", [{"gamma": -0.1}, {"isolation_ratio": 0.0}, {"isolation_ratio": 1.0},
                                    {"isolation_epochs": 0}, {"epochs": -1}, {"unlearn_lr": 0.0},
                                    {"batch_size": 0}])
def test_bad_parameters_are_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        abl(case[2], **kwargs)
