"""Query streams of two kinds of client, for the detector tests.

* ``jbda_stream``: a Jacobian-based dataset augmentation thief (Papernot et al. 2017, "Practical Black-Box Attacks
  against Machine Learning"): it sends its seed images, then, each round, trains its local model on everything
  answered so far and sends ``x + lam * sign(d F_local(x)[victim's label] / dx)``, clipped to the box, for every
  ``x`` it holds, so the set doubles each round.
* ``trnd_stream``: its T-RND variant (Juuti et al. 2019, PRADA): the same rounds, but each step follows the
  local model's gradient for a class drawn at random (uniformly among the other classes than the victim's label
  of ``x``), a targeted step towards that class.
* natural streams are plain slices of a data set (e.g. MNIST test images in order).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.stealing.metrics import predict
from bastion.zoo.architectures import build_model
from bastion.zoo.train import init_model


def _train(model: nn.Module, x: Tensor, y: Tensor, steps: int, generator: torch.Generator) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(64, x.shape[0]),), generator=generator)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def jacobian_step(model: nn.Module, x: Tensor, y: Tensor, lam: float) -> Tensor:
    """``clip(x + lam * sign(d model(x)[y] / dx))`` to [0, 1]."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, y.unsqueeze(1)).sum(), x)
    return (x + lam * grad.sign()).clamp(0.0, 1.0).detach()


def jbda_stream(victim: nn.Module, seed: Tensor, rounds: int, *, lam: float = 0.1, steps: int = 30,
                generator_seed: int = 0) -> Tensor:
    """The queries a JBDA thief sends, in order: ``len(seed) * 2**rounds`` of them."""
    return _augmenting_stream(victim, seed, rounds, lam, steps, generator_seed, random_target=False)


def trnd_stream(victim: nn.Module, seed: Tensor, rounds: int, *, lam: float = 0.1, steps: int = 30,
                generator_seed: int = 0) -> Tensor:
    """The queries a T-RND thief sends, in order: ``len(seed) * 2**rounds`` of them."""
    return _augmenting_stream(victim, seed, rounds, lam, steps, generator_seed, random_target=True)


def random_other_class(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A class drawn uniformly among the ``num_classes - 1`` others than each label."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offset) % num_classes


def _augmenting_stream(victim: nn.Module, seed: Tensor, rounds: int, lam: float, steps: int, generator_seed: int,
                       *, random_target: bool) -> Tensor:
    generator = torch.Generator().manual_seed(generator_seed)
    local = init_model(lambda: build_model("cnn", tuple(seed.shape[1:]), 10, width=8, hidden=64), generator_seed)
    held, labels = seed, predict(victim, seed)
    sent = [seed]
    for _ in range(rounds):
        _train(local, held, labels, steps, generator)
        toward = random_other_class(labels, 10, generator) if random_target else labels
        new = jacobian_step(local, held, toward, lam)
        sent.append(new)
        held, labels = torch.cat([held, new]), torch.cat([labels, predict(victim, new)])
    return torch.cat(sent)


@functools.lru_cache(maxsize=4)
def shared_jbda_stream(victim: nn.Module, seed: Tensor, rounds: int) -> Tensor:
    """``jbda_stream`` with the defaults, built once per (victim, seed, rounds) objects in a test session."""
    return jbda_stream(victim, seed, rounds)
