"""Stateful detection (Chen, Carlini & Wagner 2020, "Stateful Detection of Black-Box Adversarial Attacks", ACM
AsiaCCS SPAI workshop): keep each client's query history; a query whose ``k`` nearest earlier queries are, on
average, closer than benign queries are to each other belongs to an iterative, query-by-query search.

* Encoder: the paper trains a similarity encoder (a CNN, contrastively, on pairs of an image and a perturbed copy)
  so that distances ignore the perturbations an attacker would use to hide. No such encoder exists for every
  data set bastion serves, and training one per context is beyond a detector's build, so the default compares raw
  inputs (flattened pixels, L2): the synthetic queries it is meant to catch here (Jacobian augmentation, small
  steps from earlier queries) are near-duplicates in pixel space already. ``dim > 0`` instead projects inputs
  with a fixed Gaussian random matrix (entries ``N(0, 1/dim)``, drawn from a copy of the context's generator, so
  the same for every client of one context), which keeps L2 distances within a few percent
  (Johnson-Lindenstrauss) at a smaller history.
* Score of a query: the mean distance to its ``k`` nearest queries among the client's last ``history`` ones.
* Threshold: calibrated on the defender's own data as the paper does: the ``fpr`` quantile of the same score for
  each of the defender's points against all its other points.

**The defaults are not the paper's**; the paper's rule is ``k=50, fpr=0.001, window=1, votes=1`` with an
unbounded history (pass ``history`` larger than any client). The paper targets query-based evasion attacks, which
send thousands of near-identical queries around one input; an extraction thief (JBDA, Papernot et al. 2017, and
its variants) sends families that double each round from a seed set, each new query one step
``lam * sign(gradient)`` from its parent (about 2.0 in L2 on MNIST at the paper's ``lam = 0.1``). Three changes
follow, each with its reason:

* ``k = 1``: the parent is the one earlier relative every synthetic query has from the first round on (a family
  holds 16 members after 4 rounds, fewer than the paper's 50, so with k = 50 the score reaches past the family to
  ordinary neighbours and the thief goes unseen).
* ``history = None``: the client's last ``n - 1`` queries, ``n`` the defender's points. A benign client's score
  against that many earlier natural queries then follows the calibration's distribution (both are
  nearest-neighbour distances among ``n - 1`` in-distribution points), so the per-query rate of benign hits is
  ``fpr`` however long the client stays; against an unbounded history a long honest client's neighbours keep
  getting closer and its hits grow past any calibrated rate.
* ``fpr = 0.05`` per query, and the client is flagged when at least ``votes = 10`` of its last ``window = 20``
  queries score below the threshold. On MNIST a step (about 2.0) lies above the 1% quantile of benign
  nearest-neighbour distances (natural test data holds near-duplicate 1s 1.3 to 1.9 apart), so no per-query
  threshold both catches the steps and stays below a 0.1% benign rate; the vote moves the false-alarm control to
  the client: with independent benign hits at rate ``fpr`` a window reaches 10 of 20 with probability at most
  ``C(20, 10) * 0.05**10``, below 2e-8, so below 1e-4 over a 5,000-query client. A JBDA thief's queries hit from
  its first augmentation round on, so it is flagged ``votes`` queries into that round.

Chosen on the development streams (the JBDA stream of tests/stealing/streams.py from MNIST training images 0:100,
and MNIST training images 20,000:25,000 and 30,000:35,000 as honest clients) and validated on held-out ones
(tests/stealing/test_detectors.py). A flagged client stays flagged (the paper clears the history and bans the
account).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, register_detector
from bastion.stealing.detectors._common import service_generator


class Encoder:
    def __init__(self, shape: tuple[int, ...], dim: int, generator: torch.Generator) -> None:
        self.proj = torch.randn(math.prod(shape), dim, generator=generator) / dim ** 0.5 if dim > 0 else None

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
    def __init__(self, encode: Encoder, k: int, threshold: float, history: int, window: int, votes: int) -> None:
        self.encode, self.k, self.threshold = encode, k, threshold
        self.history, self.window, self.votes = history, window, votes
        self.past: Tensor | None = None  # the last ``history`` encoded queries
        self.recent = torch.zeros(0, dtype=torch.bool)  # hits of the last ``window - 1`` queries
        self.flagged = False

    def scores(self, z: Tensor) -> Tensor:
        """Each query's mean distance to its ``k`` nearest among the ``history`` queries before it (inf: too few)."""
        before = 0 if self.past is None else self.past.shape[0]
        seen = z if self.past is None else torch.cat([self.past, z])
        j, i = torch.arange(seen.shape[0]).unsqueeze(0), before + torch.arange(z.shape[0]).unsqueeze(1)
        earlier = (j < i) & (j >= i - self.history)
        d = torch.cdist(z, seen).masked_fill(~earlier, torch.inf)
        near = d.topk(min(self.k, seen.shape[0]), dim=1, largest=False).values.mean(1)
        self.past = seen[-self.history:]
        return near.masked_fill(earlier.sum(1) < self.k, torch.inf)

    def observe(self, x: Tensor) -> Tensor:
        hits = torch.cat([self.recent, self.scores(self.encode(x)) < self.threshold])
        counts = hits.long().cumsum(0)
        shifted = torch.cat([torch.zeros(self.window, dtype=torch.long), counts])[:counts.shape[0]]
        voted = (counts - shifted)[self.recent.shape[0]:] >= self.votes  # hits among the last ``window``
        flags = voted.cumsum(0).bool() | self.flagged
        self.flagged = bool(flags[-1]) if flags.numel() else self.flagged
        self.recent = hits[max(0, hits.shape[0] - (self.window - 1)):] if self.window > 1 else hits[:0]
        return flags


@register_detector("stateful-knn", paper="Chen, Carlini & Wagner 2020, Stateful Detection")
def stateful_knn(ctx: DefenseContext, *, k: int = 1, fpr: float = 0.05, window: int = 20, votes: int = 10,
                 history: int | None = None, dim: int = 0) -> StatefulKNN:
    """Flag a client when ``votes`` of its last ``window`` queries have a mean distance to their ``k`` nearest
    earlier queries (among the last ``history``; None: the defender's points less one) below the ``fpr`` quantile
    of the defender's own scores; ``dim``: 0 raw inputs, else a random projection. Defaults for extraction (1,
    0.05, 20, 10), not the paper's (50, 0.001, 1, 1, unbounded history): see the module docstring."""
    n = ctx.data.shape[0]
    if k < 1 or n <= k:
        raise InvalidInputError(f"stateful-knn: k={k} must be >= 1 and below the defender's {n} benign points, "
                                "which calibrate the threshold (default 1; paper: 50).")
    if not 0.0 <= fpr < 1.0:
        raise InvalidInputError(f"stateful-knn: fpr={fpr} must be in [0, 1) (default 0.05; paper: 0.001).")
    if not 1 <= votes <= window:
        raise InvalidInputError(f"stateful-knn: votes={votes} must be between 1 and window={window} "
                                "(default 10 of 20; paper: 1 of 1).")
    history = n - 1 if history is None else history
    if history < k:
        raise InvalidInputError(f"stateful-knn: history={history} must keep at least k={k} earlier queries.")
    encode = Encoder(ctx.spec.shape, dim, service_generator(ctx))
    return StatefulKNN(encode, k, calibrate(encode(ctx.data), k, fpr), history, window, votes)
