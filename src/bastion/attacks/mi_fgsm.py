"""MI-FGSM with optional input diversity (DI-FGSM): a transfer attack crafted on surrogate models.

Dong, Liao, Pang, Su, Zhu, Hu & Li 2018, "Boosting Adversarial Attacks with Momentum", CVPR:
``g <- mu g + grad / ||grad||_1``, ``x <- Proj(x + alpha sign(g))`` (L-inf; L2 uses ``g / ||g||_2``),
with ``alpha = eps / steps``; an ensemble of surrogates is attacked through their averaged logits
(Section 3.2, "ensemble in logits"). Defaults from the paper: 10 iterations, decay mu = 1.0.

Xie, Zhang, Zhou, Bai, Wang, Ren & Yuille 2019, "Improving Transferability of Adversarial Examples with
Input Diversity", CVPR: at each iteration, with probability ``diversity_prob`` the gradient is taken
through a random resize-and-pad of the input (p = 0.5 in the paper; 0 here keeps plain MI-FGSM).
The paper resizes 299-pixel images to [299, 330) and pads to 330, which needs a model that accepts the
larger size; here the same ratio is used the other way round — resize to a random side in
[round(H * 299 / 330), H] and pad back to H — so any surrogate works.

The target is never queried: ``surrogates`` (a module or a list) are attacked; without them ``model``
itself is the surrogate (white-box, as in the contract test). Evaluate the result on the target, e.g.
with ``bastion.blackbox.transfer.transfer_attack``. All iterations are run (no early stopping: more
iterations on the surrogate usually transfer better).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.losses import LOSSES
from bastion.attacks.steps import lp_step
from bastion.threat import LpThreat

DI_RATIO = 299 / 330  # Xie et al.: 299 -> [299, 330) then pad to 330


class Ensemble(nn.Module):
    """Averages the logits of several models (Dong et al. 2018, ensemble in logits)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def as_surrogate(surrogates: nn.Module | Sequence[nn.Module]) -> nn.Module:
    if isinstance(surrogates, nn.Module):
        return surrogates
    models = list(surrogates)
    return models[0] if len(models) == 1 else Ensemble(models)


@register_attack(
    "mi-fgsm",
    norms=("linf", "l2"),
    goal="budget",
    access="transfer",
    paper="Dong et al. 2018, Boosting Adversarial Attacks with Momentum; Xie et al. 2019, Input Diversity",
    randomized=True,
)
def mi_fgsm(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: LpThreat,
    *,
    targeted: bool = False,
    surrogates: nn.Module | Sequence[nn.Module] | None = None,
    steps: int = 10,
    decay: float = 1.0,
    step_size: float | None = None,
    diversity_prob: float = 0.0,
    loss: str = "ce",
    generator: torch.Generator | None = None,
) -> Tensor:
    """MI-FGSM / M-DI2-FGSM on ``surrogates`` (default: ``model``). ``step_size`` defaults to eps / steps."""
    if steps < 1 or not 0.0 <= diversity_prob <= 1.0:
        raise ValueError("steps must be >= 1 and diversity_prob in [0, 1]")
    net = as_surrogate(surrogates) if surrogates is not None else model
    loss_fn = LOSSES[loss]
    eps = threat.eps_for(inputs)
    alpha = torch.full_like(eps, step_size) if step_size is not None else eps / steps
    x_adv = inputs.clone()
    momentum = torch.zeros_like(inputs)
    for _ in range(steps):
        x = x_adv.detach().requires_grad_(True)
        logits = net(_diverse(x, diversity_prob, generator) if diversity_prob > 0 else x)
        (grad,) = torch.autograd.grad(loss_fn(logits, labels, targeted).sum(), x)
        l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12)
        momentum = decay * momentum + grad / l1.view(-1, *([1] * (grad.dim() - 1)))
        x_adv = threat.project(x_adv + lp_step(momentum, alpha, threat.norm), inputs).detach()
    return x_adv


def _diverse(x: Tensor, prob: float, gen: torch.Generator | None) -> Tensor:
    """Xie et al.'s transform: with probability ``prob``, random resize, then random zero-pad back."""
    if x.dim() != 4:
        return x
    h, w = x.shape[-2:]
    if torch.rand((), generator=gen, device=x.device) >= prob:
        return x
    low = max(1, round(min(h, w) * DI_RATIO))
    side = int(torch.randint(low, min(h, w) + 1, (), generator=gen, device=x.device))
    resized = F.interpolate(x, size=(side * h // min(h, w), side * w // min(h, w)), mode="nearest")
    pad_h, pad_w = h - resized.shape[-2], w - resized.shape[-1]
    top = int(torch.randint(0, pad_h + 1, (), generator=gen, device=x.device))
    left = int(torch.randint(0, pad_w + 1, (), generator=gen, device=x.device))
    return F.pad(resized, (left, pad_w - left, top, pad_h - top))
