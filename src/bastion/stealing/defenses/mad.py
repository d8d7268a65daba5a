"""Prediction poisoning, MAD (Orekondy, Schiele & Fritz 2020, "Prediction Poisoning: Towards Defenses Against DNN
Model Stealing Attacks", ICLR): answer a perturbed distribution ``y~`` near the true one ``y`` whose gradient
signal to the thief's model points away from the true one's.

A thief that trains its copy ``F(x; w)`` with cross-entropy on an answer ``a`` follows ``-G^T a``, where
``G = d log F(x; w) / dw`` is the ``K x D`` Jacobian of the copy's log-probabilities. MAD maximises the angular
deviation ``|| G^T y~ / ||G^T y~|| - G^T y / ||G^T y|| ||^2`` over ``y~`` in the simplex within
``||y~ - y||_p <= epsilon``. The defender does not know the thief's model; as the brief (and the paper's
transfer setting) suggests, ``G`` comes from a randomly initialised surrogate, here bastion's small ``cnn``
(width 8, hidden 64) seeded from the context's generator, with the gradient taken over all its parameters.

Solver: the paper's heuristic. (1) Find the vertex ``y*`` maximising the linearised objective
``||G^T (y* - y)||^2`` (convex in ``y*``, so its maximum over the simplex is at a vertex ``e_k``;
``(e_k - y)^T M (e_k - y)`` with ``M = G G^T``, so only the ``K x K`` Gram matrix per input is needed). (2) Move
along ``y~ = (1 - a) y + a y*`` with the largest ``a <= 1`` that keeps ``||y~ - y||_p <= epsilon``.

MAD-argmax (``keep_argmax=True``): ``y*`` is searched among the uniform distributions over class subsets that
contain the top class (every such mixture keeps the victim's argmax); exactly over all ``2^(K-1)`` subsets when
``K <= 12``, greedily above (grow the subset one class at a time, keep the best seen), as the reference code does.

Defaults: ``epsilon=0.5`` in ``l1`` (``ydist``): the paper sweeps epsilon and fixes no single value; 0.5 moves a
quarter of the probability mass. The reference code's own default takes ``G`` from the last layer's weight only;
with that choice ``G^T (y* - y) = -(y* - y) h^T`` for the penultimate features ``h``, so step (1) always picks
the victim's least likely class. Using every parameter avoids that degeneracy. ``G``'s Gram matrices are computed
with ``torch.func`` (vmap over inputs of the Jacobian), 64 inputs at a time.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, OutputDefense, register_output_defense
from bastion.stealing.defenses._common import small_model

EXACT_MAX_CLASSES = 12
CHUNK = 64


def gram_matrices(model: nn.Module, x: Tensor, chunk: int = CHUNK) -> Tensor:
    """``(N, K, K)``: per input, ``G G^T`` for ``G`` the Jacobian of the model's log-probabilities with respect to
    all its parameters (rows: classes)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def log_probs(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return F.log_softmax(functional_call(model, p, (xi.unsqueeze(0),)), dim=1).squeeze(0)

    per_input = vmap(jacrev(log_probs), in_dims=(None, 0))
    out = []
    for i in range(0, x.shape[0], chunk):
        jac = per_input(params, x[i:i + chunk])
        g = torch.cat([j.flatten(2) for j in jac.values()], dim=2).double()
        out.append(g @ g.transpose(1, 2))
    return torch.cat(out) if out else x.new_zeros(0, 0, 0, dtype=torch.float64)


def quad(m: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a^T M b`` per input for candidates: ``m`` (N, K, K), ``a`` (N, C, K), ``b`` (N, C, K) -> (N, C)."""
    return torch.einsum("nck,nkl,ncl->nc", a, m, b)


def surrogate_objective(m: Tensor, y: Tensor, cand: Tensor) -> Tensor:
    """``||G^T (c - y)||^2`` for each candidate ``c``: ``cand`` (N, C, K) -> (N, C)."""
    d = cand - y.unsqueeze(1)
    return quad(m, d, d)


def angular_deviation(m: Tensor, y: Tensor, y_tilde: Tensor) -> Tensor:
    """MAD's objective ``|| G^T y~ / ||G^T y~|| - G^T y / ||G^T y|| ||^2 = 2 - 2 cos`` per input."""
    a, b = y_tilde.unsqueeze(1), y.unsqueeze(1)
    cos = quad(m, a, b) / (quad(m, a, a) * quad(m, b, b)).sqrt().clamp_min(1e-300)
    return (2.0 - 2.0 * cos).squeeze(1)


def best_vertex(m: Tensor, y: Tensor) -> Tensor:
    """MAD's oracle: the one-hot ``e_k`` maximising the linearised objective, per input."""
    k = y.shape[1]
    cand = torch.eye(k, dtype=y.dtype).expand(y.shape[0], k, k)
    return cand[torch.arange(y.shape[0]), surrogate_objective(m, y, cand).argmax(1)]


TILT = 1e-5  # the top class's extra weight in MAD-argmax's candidates (as in the reference code): a strict argmax


def subset_uniforms(k: int) -> Tensor:
    """``(K, 2^(K-1), K)``: for each class ``c``, the distributions uniform over every class subset holding ``c``,
    ``c`` tilted up by ``TILT``."""
    others = torch.tensor(list(itertools.product((0.0, 1.0), repeat=k - 1)), dtype=torch.float64)
    ones = torch.full((others.shape[0], 1), 1.0 + TILT, dtype=torch.float64)
    table = torch.stack([torch.cat([others[:, :c], ones, others[:, c:]], 1) for c in range(k)])
    return table / table.sum(2, keepdim=True)


def best_argmax_vertex_exact(m: Tensor, y: Tensor) -> Tensor:
    cand = subset_uniforms(y.shape[1])[y.argmax(1)]
    return cand[torch.arange(y.shape[0]), surrogate_objective(m, y, cand).argmax(1)]


def best_argmax_vertex_greedy(m: Tensor, y: Tensor) -> Tensor:
    """Grow the subset from the top class one class at a time (the class that scores best), keep the best seen."""
    n, k = y.shape
    rows = torch.arange(n)
    top = F.one_hot(y.argmax(1), k).double()
    chosen = top.clone()
    best = top.clone()
    best_val = surrogate_objective(m, y, best.unsqueeze(1)).squeeze(1)
    for _ in range(k - 1):
        cand = (chosen.unsqueeze(1) + torch.eye(k, dtype=torch.float64)).clamp(max=1.0) + TILT * top.unsqueeze(1)
        cand = cand / cand.sum(2, keepdim=True)
        val = surrogate_objective(m, y, cand).masked_fill(chosen.bool(), -torch.inf)
        pick = val.argmax(1)
        chosen[rows, pick] = 1.0
        better = val[rows, pick] > best_val
        best = torch.where(better.unsqueeze(1), cand[rows, pick], best)
        best_val = torch.where(better, val[rows, pick], best_val)
    return best


def line_search(y: Tensor, y_star: Tensor, epsilon: float, p: float) -> Tensor:
    """``(1 - a) y + a y*`` with the largest ``a <= 1`` such that ``||y~ - y||_p <= epsilon`` (closed form)."""
    gap = (y_star - y).norm(p=p, dim=1, keepdim=True)
    a = (epsilon / gap.clamp_min(1e-12)).clamp(max=1.0)
    return (1.0 - a) * y + a * y_star


class MAD(OutputDefense):
    def __init__(self, victim: nn.Module, surrogate: nn.Module, epsilon: float, p: float, keep_argmax: bool) -> None:
        super().__init__(victim)
        self.surrogate = surrogate.eval().requires_grad_(False)
        self.epsilon, self.p, self.keep_argmax = epsilon, p, keep_argmax

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        y = probs.double()
        m = gram_matrices(self.surrogate, x)
        if not self.keep_argmax:
            y_star = best_vertex(m, y)
        elif y.shape[1] <= EXACT_MAX_CLASSES:
            y_star = best_argmax_vertex_exact(m, y)
        else:
            y_star = best_argmax_vertex_greedy(m, y)
        return line_search(y, y_star, self.epsilon, self.p).to(probs.dtype)


@register_output_defense("mad", answers="probs", paper="Orekondy et al. 2020, Prediction Poisoning (MAD)")
def mad(victim: nn.Module, ctx: DefenseContext, *, epsilon: float = 0.5, ydist: str = "l1",
        keep_argmax: bool = False) -> nn.Module:
    """Maximise the angular deviation of the thief's gradient within ``||y~ - y||_ydist <= epsilon`` (the paper
    sweeps epsilon; default 0.5 in L1); ``keep_argmax``: the MAD-argmax variant."""
    if ydist not in ("l1", "l2"):
        raise InvalidInputError(f"mad: ydist={ydist!r} is not a distance it knows; give 'l1' (default) or 'l2'.")
    if epsilon < 0:
        raise InvalidInputError(f"mad: epsilon={epsilon} must be >= 0 (0 answers the true probabilities).")
    return MAD(victim, small_model(ctx), epsilon, 1.0 if ydist == "l1" else 2.0, keep_argmax).eval()
