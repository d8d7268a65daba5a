"""A dynamic ensemble in the spirit of ARDEL ("Adversarially Robust Dynamic Ensemble Learning", 2024): a small
gating network weights the members per input from the members' outputs and a detector's score, trained on
clean and adversarial (PGD, Madry et al. 2018) data with the members frozen.

Gate input per example: for every member its softmax vector, top probability and entropy, plus the
feature-squeezing score (Xu et al. 2018: L1 gap between the first member's softmax on x and on the 1-bit
squeezed x). Gate: MLP(hidden=32) -> softmax over members. Output: log(sum_m w_m(x) softmax(f_m(x))).
The default members are the model and two squeezed views of it (1-bit depth, 2x2 median), so the gate can
learn to trust the squeezed views when the detector score is high; pass ``members`` to add others. The
gating design is bastion's own reading of the idea, not a reproduction of a specific paper's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.data.base import Split
from bastion.defenses.inference.base import Preprocessed, register_defense, seeded
from bastion.defenses.inference.ensemble import resolve_members
from bastion.defenses.inference.squeeze import BitDepth, MedianFilter
from bastion.threat import LpThreat

PAPER = "ARDEL-style dynamic ensemble (2024); detector score from Xu et al. 2018; PGD from Madry et al. 2018"


class DynamicEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.members = nn.ModuleList(members).requires_grad_(False)
        self.squeeze = BitDepth(1)
        m = len(members)
        self.gate = nn.Sequential(nn.Linear(m * (num_classes + 2) + 1, hidden), nn.ReLU(), nn.Linear(hidden, m))

    def weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(member probabilities (N, M, K), gate weights (N, M))."""
        probs = torch.stack([mem(x).softmax(-1) for mem in self.members], 1)
        squeezed = self.members[0](self.squeeze(x)).softmax(-1)
        score = (probs[:, 0] - squeezed).abs().sum(1, keepdim=True)
        top = probs.amax(-1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        feats = torch.cat([probs.flatten(1), top, entropy, score], 1)
        return probs, self.gate(feats).softmax(-1)

    def forward(self, x: Tensor) -> Tensor:
        probs, w = self.weights(x)
        return (w[:, :, None] * probs).sum(1).clamp_min(1e-12).log()


def train_gate(dyn: DynamicEnsemble, x: Tensor, y: Tensor, *, eps: float = 0.3, pgd_steps: int = 10,
               epochs: int = 20, lr: float = 3e-3, batch_size: int = 128,
               generator: torch.Generator | None = None) -> DynamicEnsemble:
    """Train the gate on ``x`` and PGD examples against the uniformly weighted members (in place)."""
    from bastion.attacks import get_attack
    from bastion.defenses.inference.ensemble import Ensemble

    g = generator if generator is not None else seeded(0)
    uniform = Ensemble(list(dyn.members), "probs").eval()
    adv = get_attack("pgd").fn(uniform, x, y, LpThreat("linf", eps), steps=pgd_steps, generator=g)
    xs, ys = torch.cat([x, adv]), torch.cat([y, y])
    opt = torch.optim.Adam(dyn.gate.parameters(), lr=lr)
    dyn.gate.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=g).split(batch_size):
            loss = F.nll_loss(dyn(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    dyn.gate.eval()
    return dyn


@register_defense("dynamic-ensemble", paper=PAPER, kind="ensemble", randomized=False, differentiable=False,
                  needs_data=True, clean_drop=0.05,
                  description="Gating network weights the members (default: model, 1-bit and 2x2-median views) per "
                              "input from their outputs and a squeezing score; trained on clean + PGD data.")
def build_dynamic(model: nn.Module, *, data: Split | None = None, members: Sequence[nn.Module | str] | None = None,
                  eps: float = 0.3, pgd_steps: int = 10, epochs: int = 5, train_points: int = 1000,
                  seed: int = 0) -> nn.Module:
    if data is None:
        from bastion.errors import InvalidInputError

        raise InvalidInputError("The dynamic ensemble trains its gate: pass data=Split(x, y) (the CLI passes the "
                                "model's training split).")
    base = resolve_members(model, members)
    views = [base[0], Preprocessed(BitDepth(1), model), Preprocessed(MedianFilter(2), model), *base[1:]]
    with torch.no_grad():
        k = int(model(data.x[:1]).shape[1])
    dyn = DynamicEnsemble(views, k)
    torch.nn.init.zeros_(dyn.gate[-1].weight)  # start from the uniform average
    torch.nn.init.zeros_(dyn.gate[-1].bias)
    return train_gate(dyn, data.x[:train_points], data.y[:train_points], eps=eps, pgd_steps=pgd_steps, epochs=epochs,
                      generator=seeded(seed)).eval()
