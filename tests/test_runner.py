"""The runner re-checks attacks, counts their cost and rejects bad input with a clear message."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from bastion.attacks.base import AttackSpec
from bastion.errors import InvalidInputError
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat


def _liar(goal: str = "budget") -> AttackSpec:
    """An attack that returns points far outside the ball (and flips nothing on its own)."""

    def fn(model, inputs, labels, threat, *, targeted=False, generator=None):
        return (inputs + 0.9).clamp(0, 1)

    return AttackSpec("liar", fn, ("linf",), goal, "white-box", "none")


def test_runner_projects_and_rechecks(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    result = run_attack(digits_model, x, y, LpThreat("linf", 0.05), _liar())
    assert result.outside_threat == int(result.clean_correct.sum())
    assert LpThreat("linf", 0.05).contains(result.adversarial, x).all()
    with torch.no_grad():
        really = digits_model(result.adversarial).argmax(1) != y
    assert torch.equal(result.success, really & result.clean_correct)


def test_minimal_attack_outside_eps_is_not_a_success(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    result = run_attack(digits_model, x, y, LpThreat("linf", 0.05), _liar("minimal"))
    assert not result.success.any()  # far outside eps: never counted, even if misclassified


def test_pgd_breaks_a_normal_model_and_counts_passes(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    result = run_attack(digits_model, x, y, LpThreat("linf", 0.3), "pgd", steps=20,
                        generator=torch.Generator().manual_seed(0))
    assert result.clean_accuracy > 0.8
    assert result.robust_accuracy < 0.1
    attacked = result.clean_correct
    assert (result.counts.forward[attacked] >= 1).all() and (result.counts.forward[attacked] <= 21).all()
    assert (result.counts.forward[~attacked] == 0).all()  # misclassified points cost nothing
    assert torch.all(result.norm[result.success] <= 0.3 + 1e-6)


def test_train_mode_warns_and_evaluates_in_eval_mode(digits_points) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.9))
    x, y = digits_points
    model.train()
    with pytest.warns(UserWarning, match="train mode"):
        a = run_attack(model, x, y, LpThreat("linf", 0.0), "fgsm")
    assert model.training  # the caller's mode is restored
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = run_attack(model, x, y, LpThreat("linf", 0.0), "fgsm")
    assert torch.equal(a.clean_pred, b.clean_pred)  # deterministic: dropout was off


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x, y: (x * float("nan"), y), "NaN/inf"),
        (lambda x, y: (x * 255, y), "outside the declared bounds"),
        (lambda x, y: (x.view(len(y), -1)[:, :10], y), "cannot take inputs of shape"),
        (lambda x, y: (x, y + 10), r"labels must lie in \[0, 9\]"),
        (lambda x, y: (x, y[:-1]), "labels must have shape"),
        (lambda x, y: (x, y.float()), "integer class indices"),
    ],
)
def test_bad_input_gets_one_clear_error(digits_model: nn.Module, digits_points, mutate, message: str) -> None:
    x, y = mutate(*digits_points)
    with pytest.raises(InvalidInputError, match=message):
        run_attack(digits_model, x, y, LpThreat("linf", 0.1), "pgd")


def test_attack_norm_mismatch(digits_model: nn.Module, digits_points) -> None:
    with pytest.raises(InvalidInputError, match="supports norms"):
        run_attack(digits_model, *digits_points, LpThreat("l1", 1.0), "fgsm")


class _Rejector(nn.Module):
    """A detector-defended toy: rejects (extra logit wins) whenever the input's mean exceeds 0.45."""

    reject_class = 10

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        flag = (x.flatten(1).mean(1, keepdim=True) > 0.45).float() * 1e4
        return torch.cat([logits, flag], 1)


def test_rejection_aware_accounting(digits_model: nn.Module, digits_points) -> None:
    x, y = digits_points
    defended = _Rejector(digits_model).eval()

    def brighten(model, inputs, labels, threat, *, targeted=False, generator=None):
        return (inputs + 1.0).clamp(0, 1)  # fires the detector on every point

    spec = AttackSpec("brighten", brighten, ("linf",), "budget", "white-box", "none")
    result = run_attack(defended, x, y, LpThreat("linf", 1.0), spec)
    assert (result.adv_pred[result.clean_correct] == 10).all()
    assert not result.success.any()  # misclassified but rejected: not a success
    assert result.robust_accuracy == result.clean_accuracy
    # A clean input that is rejected counts as misclassified (a false rejection).
    bright = x.clone()
    bright[:5] = (bright[:5] + 0.6).clamp(0, 1)
    rejected = run_attack(defended, bright, y, LpThreat("linf", 0.0), "fgsm")
    assert not rejected.clean_correct[:5].any()


def test_choose_targets_never_picks_the_label_and_repeats_with_the_seed(digits_model: nn.Module,
                                                                      digits_points) -> None:
    from bastion.evaluation.runner import choose_targets

    x, y = digits_points
    draw = [choose_targets(digits_model, x, y, "random", 10, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(draw[0], draw[1]) and bool((draw[0] != y).all())
    assert len(set(draw[0].tolist())) == 10  # every class is someone's target
    least = choose_targets(digits_model, x, y, "least-likely", 10)
    with torch.no_grad():
        logits = digits_model(x)
    assert bool((least != y).all())
    assert torch.equal(logits.gather(1, least[:, None]).squeeze(1),
                       logits.scatter(1, y[:, None], float("inf")).amin(1))
    with pytest.raises(InvalidInputError, match="random"):
        choose_targets(digits_model, x, y, "nearest", 10)  # type: ignore[arg-type]
