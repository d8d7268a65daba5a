"""Pieces shared by the detectors."""

from __future__ import annotations

import torch

from bastion.stealing.base import DefenseContext


def service_generator(ctx: DefenseContext) -> torch.Generator:
    """A copy of the context's generator: a detector's secrets (Blacklight's salt, a projection) drawn from it are
    the service's, the same for every client built from one context, and building a client leaves the context's
    generator where it was."""
    copy = torch.Generator(device=ctx.generator.device)
    copy.set_state(ctx.generator.get_state())
    return copy
