"""The attack runner: validates, runs an attack, re-checks every result, counts the cost.

The attack is not trusted. Its output is projected onto the threat model (budget attacks) and the
runner re-classifies it; a point counts as broken only if that re-check says so. Points the model
already misclassifies are not attacked (they are not robust) and cost nothing.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import get_attack
from bastion.attacks.base import AttackSpec, check_params
from bastion.batch import Batch, batch_size, clone, detach, put_, take, to
from bastion.errors import InvalidInputError
from bastion.evaluation.config import TargetChoice
from bastion.oracle import CountingModel, Counts
from bastion.threats import Threat
from bastion.validate import check_inputs, check_labels, ensure_eval, probe_model


@dataclass(frozen=True)
class Adaptation:
    """What an adaptive attack sees instead of the model: ``surrogate`` replaces it (e.g. with BPDA
    modules), and ``wrap`` goes around the counted model (e.g. EOT, so every sample is counted)."""

    surrogate: nn.Module | None = None
    wrap: Callable[[nn.Module], nn.Module] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttackResult:
    """Per-sample outcome of one attack on one batch (all tensors on the CPU, shape (N,) unless noted)."""

    attack: str
    params: dict[str, Any]
    threat: Threat
    targeted: bool
    adversarial: Batch  # (N, ...) examples as re-checked (inside the threat model for budget attacks), on the CPU
    clean_pred: Tensor
    adv_pred: Tensor
    clean_correct: Tensor
    success: Tensor  # attacked, inside the threat model, and adversarial on re-check
    norm: Tensor  # Lp norm of the returned perturbation (inf where the attack found nothing)
    counts: Counts
    seconds: float
    outside_threat: int = 0  # returned examples the runner had to project back (attack bug indicator)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def robust(self) -> Tensor:
        """Correct on the clean input and not broken by the attack."""
        return self.clean_correct & ~self.success

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())


def reject_class(model: nn.Module) -> int | None:
    """The output index a detector-defended model uses for "rejected" (attribute ``reject_class``), if any.

    Such a model returns ``num_classes + 1`` logits; the last one wins when the detector fires. A rejected
    clean input counts as misclassified (false rejection); a rejected adversarial example is a failed attack.
    """
    value = getattr(model, "reject_class", None)
    return int(value) if value is not None else None


def choose_targets(model: nn.Module, inputs: Tensor, labels: Tensor, how: TargetChoice, num_classes: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """One target class per point for a targeted attack, never the true label.

    ``random``: uniform over the other classes (Carlini & Wagner 2017's "average case"), drawn from ``generator``.
    ``least-likely``: the class the model scores lowest on the clean input (Kurakin, Goodfellow & Bengio 2017,
    "Adversarial examples in the physical world", the iterative least-likely class method), the hardest target.
    """
    if num_classes < 2:
        raise InvalidInputError("A targeted attack needs at least 2 classes.")
    if how == "random":
        on = generator.device if generator is not None else torch.device("cpu")
        shift = torch.randint(1, num_classes, labels.shape, generator=generator, device=on)
        return (labels.to(on) + shift).remainder(num_classes).to(labels.device)
    if how == "least-likely":
        with torch.no_grad():
            scores = model(inputs).detach()
        return scores.scatter(1, labels[:, None], float("inf")).argmin(1)
    raise InvalidInputError(f"Unknown target choice {how!r}; use 'random' or 'least-likely'.")


def run_attack(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    attack: str | AttackSpec,
    *,
    targets: Tensor | None = None,
    generator: torch.Generator | None = None,
    max_queries: int | None = None,
    adapt: Adaptation | None = None,
    **params: Any,
) -> AttackResult:
    """Run ``attack`` on the points ``model`` classifies correctly and re-check what it returns.

    ``labels`` are the true classes; pass ``targets`` for a targeted attack (success means the
    re-checked prediction equals the target). ``adapt`` lets the attack see a different model than the
    one that is re-checked (BPDA, EOT): the re-check always uses ``model`` itself.
    """
    spec = get_attack(attack) if isinstance(attack, str) else attack
    if not spec.accepts(threat):
        raise InvalidInputError(spec.refusal(threat))
    check_params(spec, params)
    check_inputs(inputs, threat)
    was_training = ensure_eval(model)
    try:
        num_classes = probe_model(model, inputs)
        check_labels(labels, batch_size(inputs), num_classes)
        if targets is not None:
            check_labels(targets, batch_size(inputs), num_classes)
        return _run(model, inputs, labels, threat, spec, targets, generator, max_queries, adapt or Adaptation(), params)
    finally:
        if was_training:
            model.train()


def _run(
    model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, spec: AttackSpec,
    targets: Tensor | None, generator: torch.Generator | None, max_queries: int | None, adapt: Adaptation,
    params: dict[str, Any],
) -> AttackResult:
    n = batch_size(inputs)
    with torch.no_grad():
        clean_pred = model(inputs).argmax(1)
    clean_correct = clean_pred == labels
    todo = clean_correct if targets is None else clean_correct & (clean_pred != targets)
    idx = todo.nonzero().flatten()
    adversarial = clone(inputs)
    counts = Counts(torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
    start = time.perf_counter()
    if max_queries is not None and "max_queries" in inspect.signature(spec.fn).parameters:
        params = {"max_queries": max_queries, **params}  # the attack plans its schedule for the budget it gets
    if idx.numel():
        counting = CountingModel(adapt.surrogate or model, idx.numel(), max_queries=max_queries)
        seen = adapt.wrap(counting) if adapt.wrap is not None else counting
        goal = labels[idx] if targets is None else targets[idx]
        out = spec.fn(seen, take(inputs, idx), goal, threat.select(idx), targeted=targets is not None,
                      generator=generator, **params)
        put_(adversarial, idx, out)
        c = counting.counts()
        counts.forward[idx.cpu()] = c.forward
        counts.backward[idx.cpu()] = c.backward
    seconds = time.perf_counter() - start
    return _recheck(model, inputs, labels, targets, threat, spec, params, adversarial, clean_pred, clean_correct,
                    todo, counts, seconds)


def _recheck(
    model: nn.Module, inputs: Tensor, labels: Tensor, targets: Tensor | None, threat: Threat, spec: AttackSpec,
    params: dict[str, Any], adversarial: Tensor, clean_pred: Tensor, clean_correct: Tensor, attacked: Tensor,
    counts: Counts, seconds: float,
) -> AttackResult:
    inside = threat.contains(adversarial, inputs)
    outside = 0
    if spec.goal == "budget":
        outside = int((~inside & attacked).sum())
        adversarial = threat.project(adversarial, inputs)
        # an Lp projection always lands inside; a constrained threat's repair may not, and then it is no success
        inside = torch.ones_like(inside) if threat.kind == "lp" else threat.contains(adversarial, inputs)
    with torch.no_grad():
        adv_pred = model(adversarial).argmax(1)
    hit = adv_pred != labels if targets is None else adv_pred == targets
    reject = reject_class(model)
    if reject is not None:  # a rejected example is not a successful attack
        hit &= adv_pred != reject
    found = attacked & hit
    floats = isinstance(inputs, Tensor) and inputs.is_floating_point()
    dtype = inputs.dtype if floats else torch.float32  # e.g. token ids: the distance is a count of edits
    norm = torch.where(found, threat.distance(adversarial, inputs).to(dtype),
                       torch.full_like(inside, float("inf"), dtype=dtype))
    return AttackResult(
        attack=spec.name, params=dict(params), threat=threat, targeted=targets is not None,
        adversarial=to(detach(adversarial), "cpu"), clean_pred=clean_pred.cpu(), adv_pred=adv_pred.cpu(),
        clean_correct=clean_correct.cpu(), success=(found & inside).cpu(), norm=norm.cpu(), counts=counts,
        seconds=seconds, outside_threat=outside,
    )
