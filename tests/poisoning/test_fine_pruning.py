"""Fine-pruning on BadNets (5%, target 0) on the MNIST fixture."""

from __future__ import annotations

import copy

import pytest
import torch
from badnets_case import badnets_case, view_of
from torch import nn

from bastion.errors import InvalidInputError
from bastion.poisoning.defenses.fine_pruning import fine_pruning
from bastion.poisoning.features import last_conv_activations, last_of
from bastion.poisoning.metrics import accuracy, attack_success_rate


@pytest.fixture(scope="module")
def case(mnist, wide_recipe):
    # the default-width CNN: on the narrow one of ``recipe`` (32 channels in the last convolution) pruning leaves
    # the backdoor alive (ASR 0.44 after fine-pruning at seed 0, 0.20 at seeds 1 and 2)
    poisoned, model = badnets_case(mnist, wide_recipe)
    view = view_of(mnist, wide_recipe, poisoned.train, model)
    before = copy.deepcopy(model.state_dict())
    return poisoned, model, view, fine_pruning(view), before


def test_fine_pruning_removes_the_backdoor_at_clean_accuracy(case, mnist) -> None:
    poisoned, model, _view, result, _ = case
    attacked = poisoned.attack_test(mnist.test)
    asr, fixed_asr = attack_success_rate(model, attacked), attack_success_rate(result.model, attacked)
    assert asr is not None and fixed_asr is not None
    # measured: ASR 0.98 -> 0.01, test accuracy 0.89 -> 0.93, 32 of 64 channels pruned
    assert asr > 0.9 and fixed_asr < 0.2
    assert accuracy(result.model, mnist.test) > accuracy(model, mnist.test) - 0.03
    assert 0 < result.info["pruned"] < result.info["channels"]


def test_pruned_channels_stay_zero_after_fine_tuning(case, mnist) -> None:
    _poisoned, model, _view, result, before = case
    conv = last_of(result.model, nn.Conv2d)
    pruned = torch.tensor(result.info["pruned_channels"])
    assert not hasattr(conv, "weight_orig"), "the prune masks must be folded into the weights"
    assert (conv.weight[pruned] == 0).all() and (conv.bias[pruned] == 0).all()
    assert (last_conv_activations(result.model, mnist.val.x[:100])[:, pruned] == 0).all()
    kept = torch.ones(conv.weight.shape[0], dtype=torch.bool)
    kept[pruned] = False
    assert (conv.weight[kept] != 0).any(), "fine-tuning ran on the kept channels"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "view.model was modified"


@pytest.mark.parametrize("kwargs", [{"max_drop": 1.5}, {"max_drop": -0.1}, {"max_fraction": 0.0},
                                    {"max_fraction": 1.0}, {"epochs": -1}, {"lr": 0.0}, {"batch_size": 0}])
def test_bad_parameters_are_one_clear_error(case, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        fine_pruning(case[2], **kwargs)
