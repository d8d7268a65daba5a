"""Rounding (Tramèr et al. 2016, "Stealing Machine Learning Models via Prediction APIs", USENIX Security, Sec. 8):
the deployment answers each class probability rounded to ``decimals`` decimal places; the paper's defaults are
small roundings (2 to 5 decimals; the default here is the coarsest, 2).

Rounded rows need not sum to 1 (three classes at 1/3 round to 0.33 each), and a row that does not would read as
logits downstream, so such a row is divided by its sum: it keeps its ratios and its argmax but its entries are no
longer multiples of ``10**-decimals``. Rows whose rounded entries already sum to 1 (most rows of a confident
model) are answered exactly as rounded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.stealing.base import DefenseContext, OutputDefense, register_output_defense


def rounded(probs: Tensor, decimals: int) -> Tensor:
    """``probs`` rounded to ``decimals`` places; a row whose rounded entries do not sum to 1 is renormalised."""
    out = torch.round(probs.double(), decimals=decimals)
    total = out.sum(1, keepdim=True)
    off = (total - 1.0).abs() > 1e-9
    return torch.where(off, out / total, out).to(probs.dtype)


class Rounded(OutputDefense):
    def __init__(self, victim: nn.Module, decimals: int) -> None:
        super().__init__(victim)
        self.decimals = decimals

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        return rounded(probs, self.decimals)


@register_output_defense("rounding", answers="probs", paper="Tramèr et al. 2016 (rounded confidences)")
def rounding(victim: nn.Module, ctx: DefenseContext, *, decimals: int = 2) -> nn.Module:
    """Probabilities rounded to ``decimals`` places (paper: 2 to 5; default 2)."""
    if decimals < 1:
        raise InvalidInputError(f"rounding: decimals={decimals} would round every probability to 0 or 1; give at "
                                "least 1 (the paper uses 2 to 5), or use the top1 defense for labels only.")
    return Rounded(victim, decimals).eval()
