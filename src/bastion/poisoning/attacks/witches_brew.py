"""Witches' Brew (Geiping, Fowl, Huang, Czaja, Taylor, Moeller & Goldstein 2021, "Witches' Brew: Industrial Scale
Data Poisoning via Gradient Matching", ICLR).

The poisons are training points of the class the attacker wants the victims to get (``view.target``), kept with
their correct label. Their perturbations ``delta`` (L-inf, ``eps``) are chosen so that the surrogate's parameter
gradient of the training loss on the poisons points the same way as the gradient of the adversarial loss on the
victims (their cross-entropy towards ``view.target``): the loss minimised is one minus the cosine similarity of
the two gradients, over all parameters. Training on the poisons then moves the weights the way that turns the
victims into ``view.target``.

Defaults, from the paper: ``eps = 16/255``; signed Adam (Adam on the sign of the gradient) on ``delta / eps`` with
learning rate 0.1, decayed tenfold at 3/8, 5/8 and 7/8 of the steps; random starts in the eps box; the restart
with the best (lowest) alignment loss is kept. The paper's 250 steps and R = 8 restarts cost far over a minute on
a CPU (0.3-0.7 s a step for 120 MNIST poisons on the CNN on a shared 2-core machine: the 2,000 steps take
10-20 minutes), so the defaults here are ``steps = 24`` and ``restarts = 2`` (under half a minute); the matrix
presets may raise them. On MNIST the alignment keeps improving well past 24 steps (cosine 0.53 -> 0.69 after 40
steps at 16/255, -> 0.93 at eps 0.3). The paper's differentiable augmentations are optional
(``augment=True``: a random shift of up to 2 pixels per step, drawn from the view's generator); off by default
because the victim recipe trains without augmentation. Poisons are clipped to ``spec.lower``/``spec.upper``.

Victims: ``n_victims`` test points of ``victim_class`` (-1: drawn among the classes other than the target) that
the surrogate classifies correctly; ``PoisonedSet.victims`` holds them with the label ``view.target``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.errors import InvalidInputError
from bastion.poisoning.attacks.feature_collision import pick_victims
from bastion.poisoning.base import AttackerView, PoisonedSet, register_poison_attack

MILESTONES = (3 / 8, 5 / 8, 7 / 8)  # the paper's learning-rate decay points (fractions of the steps)


def _grad(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=create_graph))


def alignment_loss(poison_grad: list[Tensor], target_grad: list[Tensor], target_norm: Tensor) -> Tensor:
    """One minus the cosine similarity of two parameter gradients (all layers concatenated)."""
    dot = sum((p * t).sum() for p, t in zip(poison_grad, target_grad, strict=True))
    norm = torch.sqrt(sum(p.pow(2).sum() for p in poison_grad))
    return 1 - dot / (norm * target_norm)


def _shift(x: Tensor, generator: torch.Generator, pixels: int = 2) -> Tensor:
    """A random translation by up to ``pixels`` (zero padding), differentiable in ``x``."""
    h, w = x.shape[-2:]
    dy, dx = (int(v) for v in torch.randint(0, 2 * pixels + 1, (2,), generator=generator))
    return F.pad(x, (pixels,) * 4)[..., dy:dy + h, dx:dx + w]


def brew(model: nn.Module, x: Tensor, y: Tensor, target_grad: list[Tensor], *, eps: float, steps: int,
         lr: float, augment: bool, lower: float, upper: float, generator: torch.Generator) -> tuple[Tensor, float]:
    """One restart: (delta, final alignment loss) from a random start in the eps box."""
    target_norm = torch.sqrt(sum(t.pow(2).sum() for t in target_grad))
    u = (torch.rand(x.shape, generator=generator) * 2 - 1).requires_grad_(True)  # delta = eps * u
    opt = torch.optim.Adam([u], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, round(m * steps)) for m in MILESTONES], 0.1)
    for _ in range(steps):
        inputs = (x + eps * u).clamp(lower, upper)
        inputs = _shift(inputs, generator) if augment else inputs
        loss = alignment_loss(_grad(model, inputs, y, create_graph=True), target_grad, target_norm)
        opt.zero_grad()
        (g,) = torch.autograd.grad(loss, u)
        u.grad = g.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            u.clamp_(-1, 1)
            u.copy_(((x + eps * u).clamp(lower, upper) - x) / eps)
    delta = (eps * u.detach()).clamp(-eps, eps)
    return delta, float(alignment(model, (x + delta).clamp(lower, upper), y, target_grad))


def alignment(model: nn.Module, x: Tensor, y: Tensor, target_grad: list[Tensor]) -> Tensor:
    """Alignment loss of the poisons ``x`` (labels ``y``) against ``target_grad`` (lower is better aligned)."""
    target_norm = torch.sqrt(sum(t.pow(2).sum() for t in target_grad))
    return alignment_loss(_grad(model, x, y, create_graph=False), target_grad, target_norm).detach()


def _check(eps: float, steps: int, restarts: int, lr: float, span: float) -> None:
    if not 0 < eps <= span:
        raise InvalidInputError(f"eps must be in (0, {span}] (got {eps}); the paper uses 16/255.")
    if steps < 1 or restarts < 1:
        raise InvalidInputError(f"steps and restarts must be at least 1 (got {steps}, {restarts}).")
    if lr <= 0:
        raise InvalidInputError(f"lr must be positive (got {lr}); the paper uses 0.1.")


@register_poison_attack("witches-brew", kind="clean-label", paper="Geiping et al. 2021")
def witches_brew(view: AttackerView, *, eps: float = 16 / 255, steps: int = 24, restarts: int = 2, lr: float = 0.1,
                 n_victims: int = 1, victim_class: int = -1, augment: bool = False) -> PoisonedSet:
    """Perturb ``rate * len(train)`` target-class training points so their gradient matches the victims'."""
    _check(eps, steps, restarts, lr, view.spec.upper - view.spec.lower)
    model = view.surrogate().eval()
    victims, victim_class = pick_victims(view, model, n_victims, victim_class)
    vx = view.test.x[victims]
    vy = torch.full((n_victims,), view.target, dtype=view.train.y.dtype)
    target_grad = [g.detach() for g in _grad(model, vx, vy, create_graph=False)]
    idx = view.pick(torch.nonzero(view.train.y == view.target).flatten())
    x, y = view.train.x[idx], view.train.y[idx]
    lo, hi = view.spec.lower, view.spec.upper
    start = float(alignment(model, x, y, target_grad))
    best, best_loss = torch.zeros_like(x), start
    for _ in range(restarts):
        delta, loss = brew(model, x, y, target_grad, eps=eps, steps=steps, lr=lr, augment=augment, lower=lo,
                           upper=hi, generator=view.generator)
        if loss < best_loss:
            best, best_loss = delta, loss
    train_x = view.train.x.clone()
    train_x[idx] = (x + best).clamp(lo, hi)
    poisoned = torch.zeros(len(train_x), dtype=torch.bool)
    poisoned[idx] = True
    return PoisonedSet(Split(train_x, view.train.y.clone()), poisoned, target=view.target, victims=Split(vx, vy),
                       info={"victim_index": victims, "victim_class": victim_class, "alignment_start": start,
                             "alignment_loss": best_loss})
