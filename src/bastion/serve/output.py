"""Output hardening per key: labels only, probabilities, top-k, rounding (what a caller learns per query)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bastion.serve.keys import Policy


def harden(logits: Tensor, policy: Policy) -> dict[str, Any]:
    """The answer for ``logits`` ``(N, C)`` under ``policy``: ``{"labels": [...]}`` or ``{"scores": [[...]]}``.

    ``top_k`` keeps the k largest probabilities and answers 0 for the rest (rows stay C wide, so bastion's client and
    the protocol are unchanged); it implies probabilities. ``decimals`` rounds every score."""
    if policy.output == "labels":
        return {"labels": logits.argmax(1).tolist()}
    scores = logits.double()
    if policy.output == "probabilities" or policy.top_k is not None:
        scores = scores.softmax(1)
    if policy.top_k is not None and policy.top_k < scores.shape[1]:
        keep = scores.topk(policy.top_k, dim=1).indices
        scores = torch.zeros_like(scores).scatter(1, keep, scores.gather(1, keep))
    if policy.decimals is not None:
        scores = scores.round(decimals=policy.decimals)
    return {"scores": scores.tolist()}
