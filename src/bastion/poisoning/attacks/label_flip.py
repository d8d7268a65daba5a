"""Label flipping: the dirty-label poisoning baselines.

Random flipping (availability) follows the label-noise attack of Biggio, Nelson & Laskov 2011 ("Support Vector
Machines Under Adversarial Label Noise"): ``rate`` of the training points, drawn uniformly, get a label drawn
uniformly among the other classes; the attack is measured by the victim's clean accuracy alone.

Targeted flipping (dirty-label) relabels ``rate`` worth of the training points of a ``source`` class as the
``target`` class, so that test points of ``source`` are classified as ``target`` (the class-targeted label flip
of e.g. Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated Learning Systems"). The source defaults to
the class after the target (class 1 for the default target 0).
"""

from __future__ import annotations

import torch

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack


def _mask(n: int, idx: torch.Tensor) -> torch.Tensor:
    poisoned = torch.zeros(n, dtype=torch.bool)
    poisoned[idx] = True
    return poisoned


@register_poison_attack("label-flip", kind="availability", paper="Biggio et al. 2011")
def label_flip(view: AttackerView) -> PoisonedSet:
    """Flip the labels of ``rate`` of the training points, each to a uniformly drawn different class."""
    num_classes = view.spec.num_classes
    if num_classes < 2:
        raise InvalidInputError("Label flipping needs at least two classes; this data set has one.")
    idx = view.pick(torch.arange(len(view.train)))
    y = view.train.y.clone()
    shift = torch.randint(1, num_classes, (len(idx),), generator=view.generator)
    y[idx] = (y[idx] + shift.to(y.dtype)) % num_classes
    return PoisonedSet(Split(view.train.x.clone(), y), _mask(len(y), idx),
                       info={"original_labels": view.train.y[idx].clone()})


@register_poison_attack("label-flip-targeted", kind="dirty-label", paper="Tolpegin et al. 2020")
def label_flip_targeted(view: AttackerView, *, source: int | None = None) -> PoisonedSet:
    """Relabel ``rate`` worth of the ``source`` class's training points as ``target`` (``source`` None: the class
    after the target)."""
    num_classes = view.spec.num_classes
    source = (view.target + 1) % num_classes if source is None else source
    if not 0 <= source < num_classes:
        raise InvalidInputError(f"The source class {source} does not exist; use 0 to {num_classes - 1}.")
    if source == view.target:
        raise InvalidInputError(f"The source class {source} is the target class; pick a source other than "
                                f"{view.target}.")
    idx = view.pick(torch.nonzero(view.train.y == source).flatten())
    y = view.train.y.clone()
    y[idx] = view.target
    return PoisonedSet(Split(view.train.x.clone(), y), _mask(len(y), idx), target=view.target, source=source)
