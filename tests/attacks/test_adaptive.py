"""BPDA and EOT wrappers (Athalye, Carlini & Wagner 2018)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import bpda, eot
from bastion.attacks.losses import cross_entropy
from bastion.attacks.pgd import pgd
from bastion.errors import InvalidInputError
from bastion.threat import LpThreat


class Quantize(nn.Module):
    """A shattered-gradient defense: round to 8 levels (zero gradient almost everywhere)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 8) / 8


class Noisy(nn.Module):
    """A randomized defense: Gaussian noise on the input, drawn from its own generator."""

    def __init__(self, model: nn.Module, sigma: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.sigma * torch.randn(x.shape, generator=self.generator))


def _grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(cross_entropy(model(x), y).sum(), x)
    return g


def test_bpda_gives_gradients_through_a_quantizer(digits_mlp, helpers) -> None:
    model, x, y = digits_mlp
    defended = nn.Sequential(Quantize(), model).eval()
    adaptive = nn.Sequential(bpda(Quantize()), model).eval()
    assert _grad(defended, x, y).abs().sum() == 0
    assert _grad(adaptive, x, y).abs().sum(dim=(1, 2, 3)).gt(0).all()
    with torch.no_grad():
        assert torch.equal(adaptive(x), defended(x))  # the forward pass is the real defense
    threat = LpThreat("linf", 0.25)
    naive = pgd(defended, x, y, threat, random_init=False)
    strong = pgd(adaptive, x, y, threat, random_init=False)
    assert helpers.success(defended, naive, y).float().mean() <= 0.1
    assert helpers.success(defended, strong, y).float().mean() >= 0.8


def test_bpda_with_a_classifier_as_approximation(digits_mlp) -> None:
    model, x, y = digits_mlp
    defended = nn.Sequential(Quantize(), model)
    wrapped = bpda(defended, approx=model)

    def logit_grad(m: nn.Module) -> Tensor:  # a linear function of the logits: only the Jacobian matters
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(m(xg)[:, 0].sum(), xg)[0]

    assert torch.allclose(logit_grad(wrapped), logit_grad(model))
    with pytest.raises(InvalidInputError):
        _grad(bpda(defended), x, y)  # identity approximation has the input's shape, not the logits'


def test_eot_averages_away_the_noise_of_the_gradient(digits_mlp) -> None:
    model, x, y = digits_mlp
    x, y = x[:20], y[:20]
    single, averaged = Noisy(model, seed=1), eot(Noisy(model, seed=2), samples=20)
    reference = torch.stack([_grad(eot(Noisy(model, seed=3), samples=200), x, y)]).mean(0)

    def spread(m: nn.Module) -> float:
        grads = torch.stack([_grad(m, x, y) for _ in range(8)])
        return float((grads - reference).pow(2).mean())

    assert spread(averaged) < spread(single) / 5


def test_eot_probability_average_is_a_valid_logit(digits_mlp) -> None:
    model, x, _ = digits_mlp
    with torch.no_grad():
        out = eot(model, samples=3, average="probs")(x[:5])
    assert torch.allclose(out.softmax(1), model(x[:5]).softmax(1), atol=1e-6)
    with pytest.raises(InvalidInputError):
        eot(model, samples=0)


class _RoundsInForward(nn.Module):
    """Quantized inputs written as an operation inside forward, not as a module: no leaf module blocks the gradient,
    so module-level BPDA finds nothing (issue 29, case 1)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class _HandWrittenBPDA(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + (torch.round(x * 4) / 4 - x).detach())


def test_the_suite_goes_straight_through_a_step_operation_inside_forward(digits_model: nn.Module,
                                                                         digits_points) -> None:
    import bastion
    from bastion.evaluation.runner import Adaptation, run_attack

    model = _RoundsInForward(digits_model).eval()
    x, y = digits_points
    threat = bastion.LpThreat("linf", 0.15)
    naive = bastion.evaluate(model, x, y, threat, suite="fast", adaptive=False, progress=False)
    adaptive = bastion.evaluate(model, x, y, threat, suite="fast", progress=False)
    assert adaptive.summary["adaptation"]["straight_through_ops"] == ["round"]
    assert "non_differentiable_operations" in {f["name"] for f in adaptive.flags}
    reference = run_attack(model, x, y, threat, "apgd", adapt=Adaptation(surrogate=_HandWrittenBPDA(digits_model)),
                           n_iter=100, generator=torch.Generator().manual_seed(0))
    # the gradient attacks see through the rounding: as strong as BPDA written by hand, far below the naive number
    assert adaptive.robust_accuracy <= reference.robust_accuracy + 2 / len(y)
    assert naive.robust_accuracy - adaptive.robust_accuracy > 0.4


def test_straight_through_keeps_the_forward_and_leaves_differentiable_models_alone(digits_model: nn.Module) -> None:
    from bastion.attacks.adaptive import straight_through
    from bastion.evaluation.adaptive import step_operations

    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    model = _RoundsInForward(digits_model).eval()
    assert torch.equal(straight_through(model)(x), model(x))
    (g,) = torch.autograd.grad(straight_through(model)(x).sum(), x)
    assert g.abs().sum() > 0
    assert step_operations(digits_model, x) == []  # a plain CNN has none: its gradients are left as they are
