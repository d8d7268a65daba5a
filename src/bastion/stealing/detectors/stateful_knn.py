"""Stateful detection (Chen, Carlini & Wagner 2020, "Stateful Detection of Black-Box Adversarial Attacks", ACM
AsiaCCS SPAI workshop): keep each client's query history; a query whose ``k`` nearest earlier queries are, on
average, closer than benign queries ever are to each other belongs to an iterative, query-by-query search.

* Encoder: the paper trains a similarity encoder (a CNN, contrastively, on pairs of an image and a perturbed copy)
  so that distances ignore the perturbations an attacker would use to hide. No such encoder exists for every
  data set bastion serves, and training one per context is beyond a detector's build, so the default compares raw
  inputs (flattened pixels, L2): the synthetic queries it is meant to catch here (Jacobian augmentation, small
  steps from earlier queries) are near-duplicates in pixel space already. ``dim > 0`` instead projects inputs
  with a fixed Gaussian random matrix (entries ``N(0, 1/dim)``, drawn from a copy of the context's generator, so
  the same for every client of one context), which keeps L2
  distances within a few percent (Johnson-Lindenstrauss) at a smaller history.
* Score of a query: the mean distance to its ``k = 50`` nearest earlier queries of the same client (the paper's k);
  no score until the client has sent ``k`` queries.
* Threshold: calibrated on the defender's benign data as the paper does: the ``fpr`` quantile (0.1%, the paper's
  target) of the same score computed for each benign point against all the other benign points.

A flagged client stays flagged (the paper clears the history and bans the account). The threshold is
recalibrated for every client (the factory is called once per client): about 3 s for 10,000 benign MNIST points.

On MNIST with raw pixels, k = 50 does not separate a Jacobian-augmentation thief from an honest client
(tests/stealing/test_detectors.py): calibrated on 1,000 benign points it flags both (MNIST test data holds
near-duplicate 1s closer than a thief's steps); calibrated on 10,000 it flags neither within 1,600 JBDA queries,
whose families (16 queries per seed after 4 rounds) are smaller than k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, register_detector
from bastion.stealing.detectors._common import service_generator


class Encoder:
    def __init__(self, shape: tuple[int, ...], dim: int, generator: torch.Generator) -> None:
        d_in = 1
        for s in shape:
            d_in *= s
        self.proj = torch.randn(d_in, dim, generator=generator) / dim ** 0.5 if dim > 0 else None

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.detach().flatten(1).float().cpu()
        return flat @ self.proj if self.proj is not None else flat


def calibrate(z: Tensor, k: int, fpr: float, chunk: int = 1000) -> float:
    """The ``fpr`` quantile of the benign points' scores, each against all the others."""
    scores = []
    for i in range(0, z.shape[0], chunk):
        d = torch.cdist(z[i:i + chunk], z)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = torch.inf
        scores.append(d.topk(k, dim=1, largest=False).values.mean(1))
    return float(torch.quantile(torch.cat(scores).double(), fpr))


class StatefulKNN:
    def __init__(self, encode: Encoder, k: int, threshold: float) -> None:
        self.encode, self.k, self.threshold = encode, k, threshold
        self.history: Tensor | None = None
        self.flagged = False

    def observe(self, x: Tensor) -> Tensor:
        z = self.encode(x)
        before = 0 if self.history is None else self.history.shape[0]
        seen = z if self.history is None else torch.cat([self.history, z])
        d = torch.cdist(z, seen)
        earlier = torch.arange(seen.shape[0]).unsqueeze(0) < (before + torch.arange(z.shape[0])).unsqueeze(1)
        d = d.masked_fill(~earlier, torch.inf)
        near = d.topk(min(self.k, seen.shape[0]), dim=1, largest=False).values
        enough = earlier.sum(1) >= self.k
        hits = enough & (near.mean(1) < self.threshold) if near.shape[1] == self.k else torch.zeros_like(enough)
        flags = hits.cumsum(0).bool() | self.flagged
        self.flagged = bool(flags[-1]) if flags.numel() else self.flagged
        self.history = seen
        return flags


@register_detector("stateful-knn", paper="Chen, Carlini & Wagner 2020, Stateful Detection")
def stateful_knn(ctx: DefenseContext, *, k: int = 50, fpr: float = 0.001, dim: int = 0) -> StatefulKNN:
    """Flag a client when a query's mean distance to its ``k`` nearest earlier queries falls below the ``fpr``
    quantile of benign scores; ``dim``: 0 raw inputs, else a random projection to ``dim`` dimensions."""
    if k < 1 or ctx.data.shape[0] <= k:
        raise InvalidInputError(f"stateful-knn: k={k} must be >= 1 and below the defender's {ctx.data.shape[0]} "
                                "benign points, which calibrate the threshold (paper: k=50).")
    if not 0.0 <= fpr < 1.0:
        raise InvalidInputError(f"stateful-knn: fpr={fpr} must be in [0, 1) (paper: 0.001).")
    encode = Encoder(ctx.spec.shape, dim, service_generator(ctx))
    return StatefulKNN(encode, k, calibrate(encode(ctx.data), k, fpr))
