"""Top-k probabilities: the deployment answers the ``k`` largest class probabilities, the rest set to 0, the kept
ones renormalised to sum to 1. It is the "restrict the prediction vector to the top k classes" mitigation of
Shokri et al. 2017 ("Membership Inference Attacks against Machine Learning Models", IEEE S&P, Sec. VI-B), which
evaluates k=3 next to k=1; KnockoffNets (Orekondy et al. 2019, CVPR) also truncates posteriors to the top-k
against extraction. The default is k=3: k=1 is a one-hot answer (the ``top1`` defense answers the label itself),
and 3 is the field's usual "partial posterior" setting.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, OutputDefense, register_output_defense


def top_k_probs(probs: Tensor, k: int) -> Tensor:
    """The ``k`` largest entries of each row kept (ties: ``torch.topk``'s order), the rest 0, renormalised."""
    vals, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    kept = torch.zeros_like(probs).scatter(1, idx, vals)
    return kept / kept.sum(1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


class TopK(OutputDefense):
    def __init__(self, victim: nn.Module, k: int) -> None:
        super().__init__(victim)
        self.k = k

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        return top_k_probs(probs, self.k)


@register_output_defense("top-k", answers="probs", paper="Shokri et al. 2017; Orekondy et al. 2019 (top-k posteriors)")
def top_k(victim: nn.Module, ctx: DefenseContext, *, k: int = 3) -> nn.Module:
    """Keep the ``k`` largest probabilities (Shokri et al.'s k=3), zero the rest, renormalise."""
    if k < 1:
        raise InvalidInputError(f"top-k: k={k} keeps no class; give k >= 1 (default 3).")
    return TopK(victim, k).eval()
