"""Adaptive Misinformation (Kariyappa & Qureshi 2020, "Defending Against Model Stealing Attacks with Adaptive
Misinformation", CVPR): answer in-distribution queries truthfully and out-of-distribution ones (which every
extraction attack sends) with the output of a misinformation model ``f^`` trained to be wrong.

* OOD score: the victim's maximum softmax probability ``y_max`` (the paper trains its victims with Outlier
  Exposure to sharpen this score; the victim here is used as it is).
* Misinformation model: bastion's small ``cnn`` (width 8, hidden 64) trained at build time on the defender's data
  with the paper's reverse cross-entropy, ``-log(1 - f^(x)_y)`` (make the true class improbable): ``steps`` Adam
  steps (lr 1e-3, batches of 128), initialisation and batches from the context's generator.
* Answer: ``(1 - alpha) f(x) + alpha f^(x)`` with ``alpha = 1 / (1 + exp(nu (y_max - tau)))``; ``nu = 10000``
  (the reference code's steepness, which makes the switch nearly a step at ``tau``).
* ``tau``: the paper sweeps it to trade the defender's accuracy against the clone's and fixes no single value.
  With ``tau=None`` (default) it is calibrated on the defender's data: the ``reject`` quantile of the victim's
  ``y_max`` there, so that a fraction ``reject`` (default 0.01) of in-distribution queries gets misinformation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, OutputDefense, as_probabilities, register_output_defense
from bastion.stealing.defenses._common import small_model


def reverse_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean ``-log(1 - softmax(logits)_y)``, computed stably as ``-log(sum_{j != y} p_j)``."""
    log_p = F.log_softmax(logits, dim=1)
    others = log_p.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf)
    return -torch.logsumexp(others, dim=1).mean()


def train_misinformation(ctx: DefenseContext, steps: int, batch_size: int = 128, lr: float = 1e-3) -> nn.Module:
    """A small model trained ``steps`` Adam steps to put little probability on the true class."""
    model = small_model(ctx)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(ctx.data.shape[0], generator=ctx.generator)])
        idx, order = order[:batch_size], order[batch_size:]
        loss = reverse_cross_entropy(model(ctx.data[idx]), ctx.labels[idx].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def max_probability(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([as_probabilities(model(x[i:i + batch_size])).max(1).values
                      for i in range(0, x.shape[0], batch_size)])


class AdaptiveMisinformation(OutputDefense):
    def __init__(self, victim: nn.Module, misinformation: nn.Module, tau: float, nu: float) -> None:
        super().__init__(victim)
        self.misinformation = misinformation
        self.tau, self.nu = tau, nu

    def weight(self, probs: Tensor) -> Tensor:
        """``alpha`` per row: near 0 in distribution (``y_max > tau``), near 1 out of it."""
        return torch.sigmoid(-self.nu * (probs.max(1).values.double() - self.tau))

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        with torch.no_grad():
            wrong = F.softmax(self.misinformation(x), dim=1).double()
        alpha = self.weight(probs).unsqueeze(1)
        return ((1.0 - alpha) * probs.double() + alpha * wrong).to(probs.dtype)


@register_output_defense("adaptive-misinformation", answers="probs",
                         paper="Kariyappa & Qureshi 2020, Adaptive Misinformation")
def adaptive_misinformation(victim: nn.Module, ctx: DefenseContext, *, tau: float | None = None,
                            reject: float = 0.01, nu: float = 10000.0, steps: int = 300) -> nn.Module:
    """Misinformation for queries whose top probability is below ``tau`` (None: the ``reject`` quantile of the
    defender's data), mixed in with steepness ``nu``; the misinformation model trains ``steps`` steps."""
    if not 0.0 <= reject < 1.0:
        raise InvalidInputError(f"adaptive-misinformation: reject={reject} must be in [0, 1) (default 0.01).")
    if steps < 1 or ctx.data.shape[0] == 0:
        raise InvalidInputError("adaptive-misinformation trains its misinformation model on the defender's data: "
                                f"it needs steps >= 1 (got {steps}) and data (got {ctx.data.shape[0]} points).")
    if tau is None:
        tau = float(torch.quantile(max_probability(victim, ctx.data).double(), reject))
    return AdaptiveMisinformation(victim, train_misinformation(ctx, steps), tau, nu).eval()
