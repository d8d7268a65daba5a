"""Output hardening per key: labels only, probabilities, top-k, rounding, or an output defense of
``bastion.stealing`` that needs no training data (what a caller learns per query)."""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import InvalidInputError
from bastion.serve.keys import Policy

# the output defenses a key may get: they perturb the victim's probabilities alone (the others, mad and
# adaptive-misinformation, need the defender's data or a surrogate, which a key's policy does not carry)
NO_DATA_DEFENSES = ("top1", "rounding", "top-k", "reverse-sigmoid")


@functools.lru_cache(maxsize=64)
def output_defense(name: str, params: str | None = None) -> nn.Module:
    """The defense ``name`` with ``params`` (JSON object) around the identity: it takes logits ``(N, C)``."""
    from bastion.stealing import load_algorithms
    from bastion.stealing.base import OUTPUT_DEFENSES, DefenseContext, VictimSpec, check_params

    load_algorithms()

    if name not in NO_DATA_DEFENSES:
        raise InvalidInputError(f"--output-defense {name!r} is not one of {', '.join(NO_DATA_DEFENSES)} (those "
                                "need no training data); pick one.")
    spec = OUTPUT_DEFENSES.get(name)
    given = json.loads(params) if params else {}
    if not isinstance(given, dict):
        raise InvalidInputError(f"--defense-param gives {params!r}, not KEY=VALUE pairs; e.g. --defense-param k=3.")
    kwargs = check_params("output defense", name, given, spec.defaults)
    ctx = DefenseContext(torch.zeros(0), torch.zeros(0, dtype=torch.long), VictimSpec((1,), 2),
                         torch.Generator().manual_seed(0))
    return spec.fn(nn.Identity(), ctx, **kwargs)


def harden(logits: Tensor, policy: Policy) -> dict[str, Any]:
    """The answer for ``logits`` ``(N, C)`` under ``policy``: ``{"labels": [...]}`` or ``{"scores": [[...]]}``.

    ``top_k`` keeps the k largest probabilities and answers 0 for the rest (rows stay C wide, so bastion's client and
    the protocol are unchanged); it implies probabilities. ``decimals`` rounds every score. ``defense`` answers what
    that output defense answers (probabilities, or labels for top1), then ``decimals`` rounds them."""
    if policy.output == "labels":
        return {"labels": logits.argmax(1).tolist()}
    scores = logits.double()
    if policy.defense is not None:
        with torch.no_grad():
            out = output_defense(policy.defense, policy.defense_params)(logits.float())
        if out.dim() == 1:
            return {"labels": out.long().tolist()}
        scores = out.double()
    elif policy.output == "probabilities" or policy.top_k is not None:
        scores = scores.softmax(1)
    if policy.top_k is not None and policy.top_k < scores.shape[1]:
        keep = scores.topk(policy.top_k, dim=1).indices
        scores = torch.zeros_like(scores).scatter(1, keep, scores.gather(1, keep))
    if policy.decimals is not None:
        scores = scores.round(decimals=policy.decimals)
    return {"scores": scores.tolist()}
