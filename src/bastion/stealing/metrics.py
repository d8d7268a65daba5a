"""What a stealing run measures: the copy's accuracy and fidelity, honest users' accuracy under a defense, and
when a detector flags a client."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.stealing.base import Detector


@torch.no_grad()
def predict(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted labels ``(N,)`` of a model that answers scores, probabilities or labels."""
    parts = []
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i:i + batch_size])
        parts.append(out.long() if out.dim() == 1 else out.argmax(1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def agreement(a: Tensor, b: Tensor) -> float:
    """Fraction of positions where two label vectors agree (accuracy when ``b`` holds true labels)."""
    return float((a == b).float().mean()) if a.numel() else float("nan")


def first_flag(detector: Detector, stream: Tensor, batch_size: int = 100) -> int | None:
    """After how many queries of ``stream`` (sent in order, ``batch_size`` at a time) the detector flags the
    client; None if it never does."""
    seen = 0
    for i in range(0, stream.shape[0], batch_size):
        flags = detector.observe(stream[i:i + batch_size])
        hit = torch.nonzero(flags)
        if hit.numel():
            return seen + int(hit[0]) + 1
        seen += flags.shape[0]
    return None


def false_alarms(make: Callable[[], Detector], clients: list[Tensor], batch_size: int = 100) -> list[int | None]:
    """``first_flag`` for each benign client, each with a fresh detector state."""
    return [first_flag(make(), stream, batch_size) for stream in clients]
