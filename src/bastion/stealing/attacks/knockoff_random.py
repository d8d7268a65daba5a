"""KnockoffNets, random strategy (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: Stealing Functionality of
Black-Box Models", CVPR): query the victim with images drawn uniformly without replacement from the thief's
natural-image pool (another domain), and train the copy on the answers (soft labels when the victim gives them).
"""

from __future__ import annotations

import torch

from bastion.stealing.base import ThiefView, register_steal_attack


@register_steal_attack("knockoff-random", access="probs",
                       paper="Orekondy et al. 2019, Knockoff Nets (random strategy)")
def knockoff_random(view: ThiefView, *, batch_size: int = 500) -> None:
    """Spend the budget on pool images in a random order (without replacement; the pool caps the queries)."""
    order = torch.randperm(view.pool.shape[0], generator=view.generator)[:view.remaining]
    for idx in order.split(batch_size):
        view.ask(view.pool[idx.to(view.pool.device)])
