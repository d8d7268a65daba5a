"""Ensembles: averaging (logits or probabilities), majority voting, and a randomized ensemble.

- Averaging / voting: the classic output-level combinations (e.g. Tramer et al. 2018, "Ensemble
  Adversarial Training"; Pang et al. 2019 use averaged probabilities). Voting counts each member's argmax:
  a piecewise-constant map, so its one-hot step (``OneHot``, a shape-preserving leaf) has a zero gradient
  and the adaptive evaluation replaces it by the identity (BPDA), i.e. attacks the probability average.
- Random ensemble: Random Self-Ensemble-like (Liu et al. 2018, "Towards Robust Neural Networks via Random
  Self-ensemble", ECCV): every member sees its own fixed random projection of the input (a random
  translation of up to ``shift`` pixels plus a fixed noise pattern of scale ``sigma``), and each query is
  answered by a member drawn at random per input from the module's own generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.defenses.inference.base import register_defense, seeded, zero_gradient

ENSEMBLE_PAPER = "Tramer et al. 2018, Ensemble Adversarial Training: Attacks and Defenses (output averaging)"
RSE_PAPER = "Liu et al. 2018, Towards Robust Neural Networks via Random Self-ensemble"


def resolve_members(model: nn.Module, members: Sequence[nn.Module | str] | None) -> list[nn.Module]:
    """``model`` plus the extra members (modules, or zoo names / checkpoint paths), all in eval mode."""
    out = [model]
    for m in members or ():
        if isinstance(m, str):
            from bastion.zoo import load_model

            m = load_model(m)[0]
        out.append(m.eval())
    return out


class OneHot(nn.Module):
    """Probabilities (..., K) -> one-hot of their argmax, same shape; zero gradient."""

    def forward(self, p: Tensor) -> Tensor:
        return zero_gradient(F.one_hot(p.argmax(-1), p.shape[-1]).to(p), p)


class Ensemble(nn.Module):
    """Combine ``members`` by ``mode``: "logits" (mean logits), "probs" (log of mean probabilities) or
    "vote" (log of the fraction of members voting for each class, floored at 1e-6)."""

    def __init__(self, members: Sequence[nn.Module], mode: str = "probs") -> None:
        super().__init__()
        if mode not in ("logits", "probs", "vote"):
            raise ValueError(f"mode must be 'logits', 'probs' or 'vote', got {mode!r}")
        self.members = nn.ModuleList(members)
        self.mode = mode
        self.onehot = OneHot()

    def forward(self, x: Tensor) -> Tensor:
        outs = torch.stack([m(x) for m in self.members], 1)  # (N, M, K)
        if self.mode == "logits":
            return outs.mean(1)
        probs = outs.softmax(-1)
        if self.mode == "vote":
            probs = self.onehot(probs)
        return probs.mean(1).clamp_min(1e-6).log()


class Projection(nn.Module):
    """A fixed random view of the input: an integer translation (zero fill) plus a fixed noise pattern
    (drawn from a seed fixed at construction, for whatever input shape arrives)."""

    def __init__(self, shift: int, sigma: float, generator: torch.Generator) -> None:
        super().__init__()
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
        self.dy, self.dx, self.sigma = dy, dx, sigma
        self.pattern_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        p = max(abs(self.dy), abs(self.dx))
        moved = F.pad(x, (p, p, p, p))[..., p - self.dy:p - self.dy + h, p - self.dx:p - self.dx + w]
        pattern = torch.randn(tuple(x.shape[1:]), generator=seeded(self.pattern_seed))
        return (moved + self.sigma * pattern.to(x)).clamp(0, 1)


class RandomEnsemble(nn.Module):
    """Each input is answered by one member drawn at random per call (``draws`` members averaged)."""

    def __init__(self, members: Sequence[nn.Module], draws: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.draws = draws
        self.generator = seeded(seed)

    def forward(self, x: Tensor) -> Tensor:
        outs = torch.stack([m(x) for m in self.members], 1)  # (N, M, K)
        pick = torch.randint(0, len(self.members), (x.shape[0], self.draws), generator=self.generator).to(x.device)
        chosen = outs.gather(1, pick[:, :, None].expand(-1, -1, outs.shape[-1]))
        return chosen.mean(1)


@register_defense("ensemble-average", paper=ENSEMBLE_PAPER, kind="ensemble", randomized=False, differentiable=True,
                  description="Average the members' probabilities (mode=probs) or logits (mode=logits); members "
                              "are zoo names/checkpoints/modules added to the model.")
def build_average(model: nn.Module, *, members: Sequence[nn.Module | str] | None = None, mode: str = "probs"
                  ) -> nn.Module:
    return Ensemble(resolve_members(model, members), mode)


@register_defense("ensemble-vote", paper=ENSEMBLE_PAPER, kind="ensemble", randomized=False, differentiable=False,
                  description="Majority vote of the members (output: log vote fractions).")
def build_vote(model: nn.Module, *, members: Sequence[nn.Module | str] | None = None) -> nn.Module:
    return Ensemble(resolve_members(model, members), "vote")


@register_defense("random-ensemble", paper=RSE_PAPER, kind="ensemble", randomized=True, differentiable=True,
                  clean_drop=0.10,
                  description="`size` members, each the model behind its own fixed random projection (shift, "
                              "noise pattern); a random member answers each input.")
def build_random_ensemble(model: nn.Module, *, size: int = 8, shift: int = 2, sigma: float = 0.05,
                          members: Sequence[nn.Module | str] | None = None, seed: int = 0) -> nn.Module:
    g = seeded(seed)
    bases = resolve_members(model, members)
    views = [nn.Sequential(Projection(shift, sigma, g), bases[i % len(bases)]) for i in range(size)]
    return RandomEnsemble(views, seed=seed + 1)
