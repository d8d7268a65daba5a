"""Defensive distillation: CE gradients vanish at T=1 deployment (the probe says so), the margin/DLR losses break it."""

from __future__ import annotations

import torch

from bastion.data import load_dataset
from bastion.defenses.inference import accuracy, train_distilled
from bastion.evaluation.adaptive import probe
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat


def test_distillation_masks_ce_gradients_and_margin_losses_break_it(digits_model, digits_points) -> None:
    x, y = digits_points
    train = load_dataset("digits").train
    student = train_distilled(digits_model, train.x[:800], train.y[:800], temperature=100.0, epochs=8, lr=2e-3,
                              generator=torch.Generator().manual_seed(0))
    assert accuracy(student, x, y) >= accuracy(digits_model, x, y) - 0.12
    threat = LpThreat("linf", 0.3)
    _, flags = probe(student, x, y, threat)
    assert "vanishing_gradients" in {f.name for f in flags if f.fired}
    ce = run_attack(student, x, y, threat, "pgd", steps=20, loss="ce", generator=torch.Generator().manual_seed(0))
    margin = run_attack(student, x, y, threat, "pgd", steps=20, loss="cw", generator=torch.Generator().manual_seed(0))
    dlr = run_attack(student, x, y, threat, "apgd", loss="dlr", n_iter=20, generator=torch.Generator().manual_seed(0))
    assert margin.robust_accuracy <= 0.05 and dlr.robust_accuracy <= 0.05
    assert ce.robust_accuracy >= margin.robust_accuracy + 0.2  # the false sense of security
