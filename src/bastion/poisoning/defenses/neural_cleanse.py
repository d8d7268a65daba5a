"""Neural Cleanse (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P): for every class, reverse-engineer the smallest trigger (a mask ``m`` and a pattern ``p``)
that sends clean inputs to that class; a backdoor target needs a much smaller mask than the other classes, which
the median absolute deviation of the mask norms exposes. The flagged target is then unlearned.

Reverse engineering, per class ``t``: minimise ``CE(f((1 - m) x + m p), t) + lambda * |m|_1`` over the clean
validation set, with ``m = (tanh(a) + 1) / 2`` (one mask shared by all channels) and ``p`` squashed by tanh into
the data's bounds; Adam (lr 0.1, betas 0.5/0.9, the paper's). The cost ``lambda`` starts at 1e-3 and is adjusted
after every ``patience`` epochs in a row: multiplied by 1.5 while the attack success on the batch stream is at
least 99%, divided by 1.5 while it is not (the paper's schedule). The mask kept is the smallest one that reached
99%; a class whose trigger never reaches it keeps its last mask and is listed in ``info["unreached"]``.

Detection: anomaly index ``|norm - median| / (1.4826 * MAD)``; a class whose norm is below the median with an
index above 2 is flagged (the paper's rule). Mitigation (the paper's unlearning): fine-tune on the clean
validation set where 20% of the images carry a flagged class's reversed trigger and keep their true labels.
If no class is flagged the model is returned unchanged (a copy).

Scaled for a CPU (the paper runs many more epochs with mini-batches of 32 over its clean set): per class, 10
epochs of mini-batches of 20 over 200 validation images drawn with ``view.generator`` (100 Adam steps) and a
patience of 2 epochs (paper: 5); unlearning 5 epochs of SGD at lr 0.01 over the whole validation set (the paper:
one epoch over 10% of the training data). Fewer steps leave the masks unconverged (on MNIST, 40 steps of 50 images
left the BadNets target at a 54-pixel mask, anomaly index 2.0-2.1); more separate better (75 steps of 100 images:
index 3.3) at 4x the time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.base import DefenderView, DefenseResult, register_poison_defense

MAD_CONSISTENCY = 1.4826


@dataclass(frozen=True)
class ReverseConfig:
    epochs: int
    batch_size: int
    images: int
    lr: float
    init_cost: float
    cost_multiplier: float
    patience: int
    success: float


@dataclass
class Trigger:
    mask: Tensor  # (1, H, W) in [0, 1]
    pattern: Tensor  # (C, H, W) within the data bounds
    reached: bool

    @property
    def norm(self) -> float:
        return float(self.mask.abs().sum())

    def apply(self, x: Tensor) -> Tensor:
        return (1 - self.mask) * x + self.mask * self.pattern


def _check(epochs: int, batch_size: int, images: int, lr: float, init_cost: float, cost_multiplier: float,
           patience: int, success: float, threshold: float, unlearn_ratio: float, unlearn_epochs: int,
           unlearn_lr: float) -> None:
    if epochs < 1 or batch_size < 1 or images < 1 or patience < 1 or unlearn_epochs < 0:
        raise InvalidInputError("neural-cleanse needs epochs >= 1, batch_size >= 1, images >= 1, patience >= 1 "
                                "and unlearn_epochs >= 0.")
    if lr <= 0 or unlearn_lr <= 0 or init_cost < 0 or cost_multiplier <= 1:
        raise InvalidInputError("neural-cleanse needs lr > 0, unlearn_lr > 0, init_cost >= 0 and "
                                "cost_multiplier > 1.")
    if not 0 < success <= 1 or not 0 < unlearn_ratio <= 1 or threshold <= 0:
        raise InvalidInputError("neural-cleanse needs 0 < success <= 1, 0 < unlearn_ratio <= 1 and threshold > 0.")


def reverse_trigger(model: nn.Module, x: Tensor, target: int, cfg: ReverseConfig, lower: float, upper: float,
                    generator: torch.Generator) -> Trigger:
    """The smallest mask (and its pattern) that sends ``x`` to ``target``, by the paper's optimisation."""
    _c, h, w = x.shape[1:]
    mask_raw = torch.zeros(1, h, w, requires_grad=True)
    pattern_raw = torch.zeros(x.shape[1:], requires_grad=True)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=cfg.lr, betas=(0.5, 0.9))
    cost, up, down = cfg.init_cost, 0, 0
    best: Trigger | None = None
    labels = torch.full((len(x),), target, dtype=torch.long)
    for _ in range(cfg.epochs):
        hits = 0
        for idx in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
            mask = (torch.tanh(mask_raw) + 1) / 2
            pattern = lower + (upper - lower) * (torch.tanh(pattern_raw) + 1) / 2
            logits = model((1 - mask) * x[idx] + mask * pattern)
            loss = F.cross_entropy(logits, labels[idx]) + cost * mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == target).sum())
        with torch.no_grad():
            current = Trigger((torch.tanh(mask_raw) + 1) / 2, lower + (upper - lower) * (torch.tanh(pattern_raw) + 1)
                              / 2, reached=hits / len(x) >= cfg.success)
        if current.reached and (best is None or current.norm < best.norm):
            best = current
        up, down = (up + 1, 0) if current.reached else (0, down + 1)
        if up >= cfg.patience:
            cost, up = cost * cfg.cost_multiplier, 0
        elif down >= cfg.patience:
            cost, down = cost / cfg.cost_multiplier, 0
    return best if best is not None else current


def anomaly_index(norms: Tensor) -> Tensor:
    """``|norm - median| / (1.4826 * MAD)`` for every class (MAD: median absolute deviation)."""
    med = norms.median()
    mad = MAD_CONSISTENCY * (norms - med).abs().median()
    return (norms - med).abs() / mad.clamp_min(1e-12)


def unlearn(model: nn.Module, val: Split, triggers: list[Trigger], *, ratio: float, epochs: int, lr: float,
            batch_size: int, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` fine-tuned on ``val`` with ``ratio`` of it stamped with the triggers (true labels)."""
    x = val.x.clone()
    chosen = torch.randperm(len(x), generator=generator)[:max(1, round(ratio * len(x)))]
    for k, idx in enumerate(chosen.tensor_split(len(triggers))):
        x[idx] = triggers[k].apply(x[idx])
    repaired = copy.deepcopy(model)
    opt = torch.optim.SGD(repaired.parameters(), lr=lr, momentum=0.9)
    repaired.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = F.cross_entropy(repaired(x[idx]), val.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return repaired.eval()


@register_poison_defense("neural-cleanse", stage="repair", paper="Wang et al. 2019")
def neural_cleanse(view: DefenderView, *, epochs: int = 10, batch_size: int = 20, images: int = 200,
                   lr: float = 0.1, init_cost: float = 1e-3, cost_multiplier: float = 1.5, patience: int = 2,
                   success: float = 0.99, threshold: float = 2.0, unlearn_ratio: float = 0.2, unlearn_epochs: int = 5,
                   unlearn_lr: float = 0.01) -> DefenseResult:
    """Reverse-engineer a trigger per class, flag the classes whose mask norm is an outlier on the small side
    (anomaly index above ``threshold``), and unlearn their triggers."""
    _check(epochs, batch_size, images, lr, init_cost, cost_multiplier, patience, success, threshold, unlearn_ratio,
           unlearn_epochs, unlearn_lr)
    if view.model is None:
        raise InvalidInputError("neural-cleanse repairs a trained model; run it at stage 'repair'.")
    model = copy.deepcopy(view.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = ReverseConfig(epochs, batch_size, images, lr, init_cost, cost_multiplier, patience, success)
    x = view.val.x[torch.randperm(len(view.val), generator=view.generator)[:images]]
    triggers = [reverse_trigger(model, x, t, cfg, view.spec.lower, view.spec.upper, view.generator)
                for t in range(view.spec.num_classes)]
    for p in model.parameters():
        p.requires_grad_(True)
    norms = torch.tensor([t.norm for t in triggers])
    index = anomaly_index(norms)
    flagged = [c for c in range(len(norms)) if norms[c] < norms.median() and index[c] > threshold]
    info = {"norms": norms.tolist(), "anomaly_index": index.tolist(), "flagged_classes": flagged,
            "unreached": [c for c, t in enumerate(triggers) if not t.reached],
            "trigger_masks": {c: triggers[c].mask for c in flagged}}
    if not flagged:
        info["note"] = "no class flagged: the model is returned unchanged"
        return DefenseResult(model=model, info=info)
    repaired = unlearn(model, view.val, [triggers[c] for c in flagged], ratio=unlearn_ratio, epochs=unlearn_epochs,
                       lr=unlearn_lr, batch_size=32, generator=view.generator)
    return DefenseResult(model=repaired, info=info)
