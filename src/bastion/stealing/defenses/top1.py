"""Top-1 only: the deployment answers the predicted label and nothing else (the label-only API that Tramèr et al.
2016, "Stealing Machine Learning Models via Prediction APIs", USENIX Security, discuss as the counter-measure to
confidence-based extraction). Honest users lose nothing of the label; a thief loses every probability."""

from __future__ import annotations

from torch import Tensor, nn

from bastion.stealing.base import DefenseContext, OutputDefense, register_output_defense


class TopOne(OutputDefense):
    """The victim's predicted label, ``(N,)`` int64."""

    answers = "labels"

    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        return probs.argmax(1)


@register_output_defense("top1", answers="labels", paper="Tramèr et al. 2016 (label-only answers)")
def top1(victim: nn.Module, ctx: DefenseContext) -> nn.Module:
    """Answer the label only; no parameter."""
    return TopOne(victim).eval()
