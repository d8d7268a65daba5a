"""Adversarial training of the neural IDS detectors: the standard training loop of ``train_detector`` with a share
of each batch's attack flows replaced by adversarial flows that move toward benign.

Two settings (``method``):

- ``"khamis"``: Khamis & Matrawy 2020 ("Evaluation of adversarial training on different types of neural networks in
  deep learning-based IDSs", ISNCC 2020; arXiv 2007.04472) train DNN, CNN and RNN detectors in the min-max
  (saddle-point) formulation on min-max normalised flow features, with the inner maximizers of Al-Dujaili et al.'s
  SLEIPNIR framework ("Adversarial deep learning for robust detection of binary encoded malware", IEEE S&P
  Workshops 2018), which their earlier paper (Khamis, Shafiq & Matrawy 2019, arXiv 1910.14107) names as its
  "min" approach. What is followed, from that framework's published code: every batch's malicious rows are all
  replaced by their adversarial version (``ratio`` 1.0), benign rows stay clean; the inner maximizer is
  dFGSM^k carried to continuous features (as Khamis et al. do): k = 50 sign-gradient steps of 0.02 on the
  [0, 1] min-max scaled vector, clipped to [0, 1], every feature free (unconstrained), and a row whose
  adversarial loss is below its natural loss keeps its natural value. rFGSM^k differs only by randomised
  rounding to binary features, which continuous features do not have, so it is the same here; BGA^k and BCA^k
  flip bits and have no continuous analogue. What is approximated: the 2020 paper's exact k, step and epochs
  could not be read here (only its abstract was available); SLEIPNIR bounds the walk by the [0, 1] box only,
  this bounds it also by an L-inf ball of ``eps`` (the threat's budget unless given; ``eps=1.0`` is SLEIPNIR's
  box). Epochs, batch size and learning rate are the caller's (``train_detector``'s defaults), not SLEIPNIR's
  200 epochs of batches of 8.
- ``"capgd"``: constrained adversarial training as Simonetto et al. evaluate it (TabularBench, Simonetto, Ghamizi
  & Cordy, NeurIPS 2024 Datasets and Benchmarks, the "madry" training of the models CAA is run against in
  "Constrained Adaptive Attack", NeurIPS 2024): each batch, half of the rows (``ratio`` 0.5) are replaced by
  constrained adversarial examples (CAPGD, its defaults: 10 steps, 1 restart), the other half stay clean. Here
  the examples are CAPGD's inside the ``TabularThreat`` (every relation, integer, immutable and box constraint),
  and only those that ``threat.contains`` accepts replace their flow: the detector only ever learns from flows
  that could exist. Deviation: TabularBench attacks half of *all* rows, untargeted; here only attack-class rows
  are attacked, toward benign (below).

Both settings attack only attack-class rows (``y != benign``) and aim them at ``benign`` (targeted): the evasion an
adversary has a reason for. SLEIPNIR does the same (malicious rows only, ascending their label's loss, which for
two classes is the same step as descending benign's). ``ratio`` is the share of each batch's attack rows that are
replaced (the first ones of the shuffled batch: no extra random draw). With ``ratio=0`` the loop is
``train_detector``'s, draw for draw: same shuffles, loss, optimizer, so the weights are identical (tested).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.attacks import get_attack
from bastion.attacks.base import check_params
from bastion.errors import InvalidInputError
from bastion.ids.models.base import Detector
from bastion.ids.models.training import _checked, class_weights
from bastion.threats.tabular import TabularThreat

log = logging.getLogger(__name__)

METHODS: dict[str, str] = {
    "khamis": "Khamis & Matrawy 2020 (ISNCC): min-max training, dFGSM^k on min-max scaled features, unconstrained",
    "capgd": "Simonetto et al. 2024 (TabularBench / CAA, NeurIPS): CAPGD examples inside the feature constraints",
}
DEFAULT_RATIO = {"khamis": 1.0, "capgd": 0.5}
KHAMIS_STEPS, KHAMIS_STEP_SIZE = 50, 0.02  # SLEIPNIR's evasion_iterations and per-step epsilon


def khamis_examples(model: nn.Module, rows: Tensor, target: Tensor, threat: TabularThreat, eps: float, *,
                    steps: int = KHAMIS_STEPS, step_size: float = KHAMIS_STEP_SIZE) -> Tensor:
    """dFGSM^k in continuous features: ``steps`` signed steps of ``step_size`` toward class ``target`` on the
    min-max scaled vector (span from the threat's box), clipped to [0, 1] and to the L-inf ball ``eps`` there;
    rows whose loss did not rise keep their input (SLEIPNIR's rule). Raw units in and out."""
    lower = threat.lower.to(rows)
    span = (threat.upper - threat.lower).to(rows)
    span = torch.where(span > 0, span, torch.ones_like(span))
    z0 = (rows - lower) / span
    lo, hi = (z0 - eps).clamp(min=0.0), (z0 + eps).clamp(max=1.0)
    lo, hi = torch.minimum(lo, z0), torch.maximum(hi, z0)  # a row outside the training box stays reachable

    def loss(z: Tensor) -> Tensor:  # targeted: the adversary lowers the benign loss
        return -nn.functional.cross_entropy(model(lower + z * span), target, reduction="none")

    z = z0.clone()
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(z).sum(), z)
        z = torch.minimum(torch.maximum(z.detach() + step_size * grad.sign(), lo), hi)
    with torch.no_grad():
        worse = loss(z) < loss(z0)
    return lower + torch.where(worse[:, None], z0, z) * span


class InputDtype(nn.Module):
    """``model`` answering logits in its input's dtype. The constrained attacks keep their per-point scores in the
    input's dtype (float64 flows) and fail on the float32 logits a ``Detector`` answers; this bridges them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).to(x.dtype)  # type: ignore[no-any-return]


def capgd_examples(model: nn.Module, rows: Tensor, target: Tensor, threat: TabularThreat, eps: float, *,
                   generator: torch.Generator, **params: Any) -> Tensor:
    """CAPGD (``bastion.attacks.capgd``) toward ``target`` inside ``threat`` at budget ``eps``; a row whose result
    ``threat.contains`` rejects keeps its input (only valid flows are trained on)."""
    spec = get_attack("capgd")
    local = replace(threat, eps=float(eps))
    out = spec.fn(InputDtype(model), rows, target, local, targeted=True, generator=generator, **params).detach()
    return torch.where(local.contains(out, rows)[:, None], out, rows)


def _settings(method: str, ratio: float | None, eps: float | None, threat: TabularThreat,
              params: dict[str, Any]) -> tuple[float, float]:
    if method not in METHODS:
        raise InvalidInputError(f"method={method!r} is not one of {', '.join(METHODS)}; pass one of them.")
    ratio = DEFAULT_RATIO[method] if ratio is None else float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise InvalidInputError(f"ratio={ratio} must lie in [0, 1] (the share of each batch's attack rows replaced).")
    if eps is None and isinstance(threat.eps, Tensor) and threat.eps.numel() > 1:
        raise InvalidInputError("the threat has a per-row eps; pass one eps for training.")
    budget = float(threat.eps) if eps is None else float(eps)  # type: ignore[arg-type]
    if not (math.isfinite(budget) and budget >= 0):
        raise InvalidInputError(f"eps={eps} must be a finite non-negative number (scaled units).")
    if method == "capgd":
        check_params(get_attack("capgd"), params)
    elif set(params) - {"steps", "step_size"}:
        unknown = ", ".join(sorted(set(params) - {"steps", "step_size"}))
        raise InvalidInputError(f"method 'khamis' has no attack parameter {unknown}; its parameters: steps, "
                                "step_size.")
    if int(params.get("steps", 1)) < 1 or not float(params.get("step_size", 1.0)) > 0:
        raise InvalidInputError("steps must be at least 1 and step_size positive.")
    return ratio, budget


def _craft(model: nn.Module, xb: Tensor, yb: Tensor, threat: TabularThreat, *, method: str, ratio: float, eps: float,
           benign: int, generator: torch.Generator, params: dict[str, Any]) -> tuple[Tensor, int, int]:
    """The batch with the first ``ratio`` share of its attack rows replaced; (batch, rows tried, rows replaced)."""
    attack_rows = (yb != benign).nonzero().flatten()
    chosen = attack_rows[:round(ratio * attack_rows.numel())]
    if chosen.numel() == 0:
        return xb, 0, 0
    rows, target = xb[chosen], torch.full((chosen.numel(),), benign, dtype=torch.long)
    model.eval()
    if method == "khamis":
        adv = khamis_examples(model, rows, target, threat, eps, **params)
    else:
        adv = capgd_examples(model, rows, target, threat, eps, generator=generator, **params)
    model.train()
    out = xb.clone()
    out[chosen] = adv.to(out.dtype)
    changed = int(((adv - rows).abs() > 0).any(1).sum())
    return out, chosen.numel(), changed


def adversarial_train(model: nn.Module, x: np.ndarray | Tensor, y: np.ndarray | Tensor, threat: TabularThreat, *,
                      method: str = "capgd", ratio: float | None = None, epochs: int = 10, batch_size: int = 256,
                      lr: float = 1e-3, eps: float | None = None, class_weight: str | None = "balanced",
                      benign: int = 0, generator: torch.Generator,
                      **attack_params: Any) -> tuple[nn.Module, dict[str, list[float]]]:
    """Adversarially train a neural ``Detector`` (module docstring) on raw rows ``x`` and class indices ``y``.

    ``ratio``: share of each batch's attack rows replaced (``None``: the method's paper value, khamis 1.0, capgd
    0.5); ``eps``: the attack budget in the threat's scaled units (``None``: ``threat.eps``); ``attack_params``:
    khamis ``steps`` (50) and ``step_size`` (0.02), or CAPGD's own parameters. Everything else as
    ``train_detector`` (Adam, lr 1e-3, balanced class weights). Returns the model in eval mode and per epoch
    ``loss``, ``accuracy`` (on the batches trained on), ``attacked`` (rows attacked) and ``replaced`` (rows that
    changed)."""
    if not isinstance(model, Detector):
        raise InvalidInputError("adversarial training needs a neural detector (mlp, cnn1d, gru); the gradient-boosted "
                                "one has no gradients: train it with train_detector.")
    ratio, budget = _settings(method, ratio, eps, threat, attack_params)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise InvalidInputError("epochs and batch_size must be at least 1 and lr positive.")
    if class_weight not in ("balanced", None):
        raise InvalidInputError(f"class_weight={class_weight!r} is not 'balanced' or None; pass one of them.")
    num_classes = int(model.config["num_classes"])
    xs, ys = _checked(x, y, num_classes)
    weights = class_weights(ys, num_classes) if class_weight else np.ones(num_classes)
    settings = {"method": method, "ratio": ratio, "eps": budget, "benign": benign, "params": attack_params}
    return _loop(model, torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(weights), threat, epochs,
                 batch_size, lr, generator, settings)


def _loop(model: nn.Module, x: Tensor, y: Tensor, weights: Tensor, threat: TabularThreat, epochs: int,
          batch_size: int, lr: float, generator: torch.Generator,
          settings: dict[str, Any]) -> tuple[nn.Module, dict[str, list[float]]]:
    """``train_detector``'s loop (same shuffles, loss and optimizer) with ``_craft`` applied to each batch."""
    dtype = next(model.body.parameters()).dtype
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "attacked": [], "replaced": []}
    for epoch in range(epochs):
        model.train()
        total, correct, attacked, replaced = 0.0, 0, 0, 0
        for index in torch.randperm(len(x), generator=generator).split(batch_size):
            xb, tried, changed = (x[index], 0, 0) if settings["ratio"] == 0 else _craft(
                model, x[index], y[index], threat, generator=generator, **settings)
            logits = model(xb)
            loss = loss_fn(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y[index]).sum())
            attacked, replaced = attacked + tried, replaced + changed
        for key, value in (("loss", total / len(x)), ("accuracy", correct / len(x)), ("attacked", attacked),
                           ("replaced", replaced)):
            history[key].append(float(value))
        log.debug("epoch %d (%s): loss %.4f, accuracy %.3f, %d of %d attacked rows changed", epoch + 1,
                  settings["method"], history["loss"][-1], history["accuracy"][-1], replaced, attacked)
    return model.eval(), history


__all__ = ["DEFAULT_RATIO", "METHODS", "InputDtype", "adversarial_train", "capgd_examples", "khamis_examples"]
