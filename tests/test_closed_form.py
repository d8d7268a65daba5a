"""Budget attacks against a linear model, where the minimal perturbation is known in closed form.

For a binary linear classifier with logit difference g(x) = w.x + b, the smallest Lp perturbation that
flips the decision has norm |g(x)| / ||w||_q with q the dual norm (linf -> l1, l2 -> l2, l1 -> linf).
A budget attack must succeed when eps is a little above it and fail when eps is a little below.
"""

from __future__ import annotations

import pytest
import torch
from tests.conftest import linear_model

from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat

DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


def _problem(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = 16
    w = torch.randn(d, generator=g)
    # Two logits: class 1 minus class 0 equals w.x + b.
    model = linear_model(torch.stack([torch.zeros(d), w]), torch.tensor([0.0, 0.1]))
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4, generator=g)  # away from the box faces
    labels = model(x).argmax(1)
    return model, x, labels, w


def _minimal(model: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x)
    return (logits[:, 1] - logits[:, 0]).abs() / w.norm(p=DUAL[norm])


@pytest.mark.parametrize(("attack", "norm"), [("pgd", "linf"), ("pgd", "l2"), ("pgd", "l1"),
                                              ("fgsm", "linf"), ("fgsm", "l2")])
def test_budget_attack_succeeds_exactly_when_closed_form_allows(attack: str, norm: str) -> None:
    model, x, labels, w = _problem()
    minimal = _minimal(model, x, w, norm)
    box = LpThreat(norm, 1.0, lower=-10.0, upper=10.0)  # a box that never binds
    # Without a random start PGD walks straight along w on a linear model, so it is exact here.
    params: dict = {"steps": 200, "random_init": False} if attack == "pgd" else {}
    if norm == "l1":
        params["l1_sparsity"] = 1.0 - 1.0 / x[0].numel()  # one coordinate per step: exact for linear models
    above = run_attack(model, x, labels, LpThreat(norm, minimal * 1.02, lower=box.lower, upper=box.upper), attack,
                       generator=torch.Generator().manual_seed(0), **params)
    below = run_attack(model, x, labels, LpThreat(norm, minimal * 0.98, lower=box.lower, upper=box.upper), attack,
                       generator=torch.Generator().manual_seed(0), **params)
    assert above.success.all(), f"{attack} {norm} missed points it could break: {above.success.float().mean()}"
    assert not below.success.any(), "broke points the closed form says are robust (the re-check is wrong)"
    assert torch.all(above.norm <= minimal * 1.02 * (1 + 1e-4))
