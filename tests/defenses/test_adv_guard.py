"""The catastrophic-overfitting guard fires on a constructed collapse and rolls back; the automatic schedule adapts."""

from __future__ import annotations

import torch
from adv_helpers import EPS, toy, toy_model

from bastion.defenses.training import AutoSchedule, CollapseGuard, Recipe, robust_accuracy, train_epochs
from bastion.defenses.training.pgd_at import pgd_at_step
from bastion.threat import LpThreat

TRAIN, VAL = toy(320, 0), toy(128, 1)


def test_guard_fires_on_constructed_collapse_and_rolls_back() -> None:
    calls = {"n": 0}

    def step(model, optimizer, x, y, threat, ctx, **kw):
        calls["n"] += 1
        if calls["n"] <= 6:  # honest PGD-AT
            return pgd_at_step(model, optimizer, x, y, threat, ctx, steps=3)
        # then a "catastrophic" update: the weak, non-robust features take over (clean accuracy stays high)
        with torch.no_grad():
            layer, sign = model[1], torch.tensor([-1.0, 1.0])
            layer.weight[:, 1:] += 2.0 * sign[:, None]
            layer.bias -= 2.0 * sign * 0.5 * (layer.weight.shape[1] - 1)
        return pgd_at_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, threat, ctx, steps=1)

    recipe = Recipe(defense="pgd-at", dataset="toy", eps=EPS, epochs=4, batch_size=64, lr=1e-2, val_size=128,
                    check_size=128, check_every=2, val_steps=5, lr_schedule="constant", method={"steps": 3})
    pretrain = recipe.model_copy(update={"epochs": 12, "lr": 3e-2, "collapse_drop": 1.0})
    robust_start, _ = train_epochs(toy_model(), TRAIN, VAL, pretrain)  # a robust model to start from
    assert robust_accuracy(robust_start, VAL.x, VAL.y, LpThreat("linf", EPS))[1] > 0.8
    model, run = train_epochs(robust_start.train(), TRAIN, VAL, recipe, step_fn=step)
    assert run.stopped.startswith("catastrophic overfitting"), run.stopped
    assert calls["n"] <= 8, "stopped at the first check after the collapse"
    clean, robust = robust_accuracy(model, VAL.x, VAL.y, LpThreat("linf", EPS))
    assert robust > 0.8 and clean > 0.9, "rolled back to robust weights"


def test_guard_unit() -> None:
    model = toy_model()
    g = CollapseGuard(drop=0.2)
    assert not g.check(model, 0.5, clean=0.9)
    assert not g.check(model, 0.4, clean=0.9)
    assert not g.check(model, 0.25, clean=0.6), "clean accuracy fell too: still learning, not a collapse"
    assert g.check(model, 0.25, clean=0.95)


def test_auto_schedule_raises_eps_when_robust_and_meets_deadline() -> None:
    s = AutoSchedule.begin(0.3)
    assert s.eps_at(0.0) == 0.3 * 0.25
    assert s.advance(clean=0.9, robust=0.1, progress=0.0).current == s.current
    assert s.advance(clean=0.9, robust=0.8, progress=0.0).current > s.current
    assert s.eps_at(0.5) == 0.3 and s.tau_at(0.0) == 0 and s.tau_at(0.99) == 3


def test_early_stopping_keeps_best_robust_epoch() -> None:
    recipe = Recipe(defense="fast-at", dataset="toy", eps=EPS, epochs=3, batch_size=64, lr=3e-2, val_size=128,
                    check_size=64, val_steps=3, method={"guard": "none"}, ema_decay=0.9)
    _, run = train_epochs(toy_model(), TRAIN, VAL, recipe)
    best = max(run.history["val_robust"])
    assert run.best_robust == best and run.history["val_robust"][run.best_epoch] == best
