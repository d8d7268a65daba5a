"""KnockoffNets, adaptive strategy (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: Stealing Functionality of
Black-Box Models", CVPR, Sec. 4.1.2).

A gradient bandit chooses *what kind* of image to ask next. Actions are the pool's own labels (or, for a pool
without labels, k-means clusters of its pixels). Each step samples an action from ``pi = softmax(H)``, draws pool
images of it (without replacement), asks the victim and scores the answers ``y`` with the paper's three rewards:

* certainty: the margin between the victim's two top probabilities;
* diversity: ``sum_k max(0, y_k - ybar_k)``, how far the answer exceeds the mean of the last ``Delta`` answers;
* loss: the cross-entropy of the thief's online copy against the answer (how much the copy has yet to learn).

Each reward is standardised by its running mean and standard deviation and the three are summed into ``r``; then the
preferences follow the gradient-bandit rule ``H(a) += alpha (r - rbar)(1 - pi(a))`` for the chosen action and
``H(a') -= alpha (r - rbar) pi(a')`` for the others, with ``alpha = 1 / N(a)`` (``N(a)``: times ``a`` was chosen)
and ``rbar`` the mean reward so far. The online copy (the thief's recipe on the first step's answers) takes a few
Adam steps on everything answered every few bandit steps, which keeps the loss reward current and the attack cheap.

Label answers work the same way with one-hot ``y``: the certainty reward is then constant and standardises to 0,
so diversity and loss steer the bandit (a label-based reward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.stealing.attacks._tools import as_distributions, draw, soft_cross_entropy
from bastion.stealing.base import ThiefView, register_steal_attack


@register_steal_attack("knockoff-adaptive", access="probs",
                       paper="Orekondy et al. 2019, Knockoff Nets (adaptive strategy)")
def knockoff_adaptive(view: ThiefView, *, batch_size: int = 8, diversity_window: int = 100,
                      clusters: int = 10, update_every: int = 4, online_steps: int = 4,
                      online_batch: int = 64, online_lr: float = 1e-3) -> None:
    """Bandit-driven sampling of the pool's classes.

    Args:
        batch_size: pool images asked per bandit step (all of the step's action).
        diversity_window: ``Delta``, how many recent answers the diversity reward's mean covers.
        clusters: k-means clusters used as actions when the pool has no labels (ignored otherwise).
        update_every: bandit steps between two updates of the online copy.
        online_steps: Adam steps per update of the online copy (minibatches of everything answered so far).
        online_batch: minibatch size of those steps.
        online_lr: their learning rate.
    """
    members = action_members(view, clusters)
    bandit = GradientBandit(len(members))
    rewards = RunningStandardiser(3)
    online: OnlineCopy | None = None
    recent = torch.zeros(0, view.spec.num_classes)
    while view.remaining > 0 and bandit.available.any():
        action = bandit.sample(view.generator)
        idx = members[action].take(min(batch_size, view.remaining))
        x = view.pool[idx.to(view.pool.device)]
        answers = view.ask(x)
        y = as_distributions(answers, view.spec.num_classes).cpu()
        if online is None:
            online = OnlineCopy(view.fit(x, answers), view.pool, online_lr)
        recent = torch.cat([recent, y])[-diversity_window:]
        raw = torch.stack([certainty(y), diversity(y, recent), online.loss(x, y)])
        bandit.update(action, float(rewards.standardise(raw).sum()))
        bandit.available[action] = members[action].left > 0
        online.remember(idx, y)
        if bandit.steps % update_every == 0:
            online.train(online_steps, online_batch, view.generator)


# the actions -----------------------------------------------------------------------------------------------------
@dataclass
class Members:
    """One action's pool indices in a random order; ``take`` hands them out without replacement."""

    order: Tensor
    used: int = 0

    @property
    def left(self) -> int:
        return self.order.shape[0] - self.used

    def take(self, n: int) -> Tensor:
        out = self.order[self.used:self.used + n]
        self.used += out.shape[0]
        return out


def action_members(view: ThiefView, clusters: int) -> list[Members]:
    """The pool's labels as actions, else k-means clusters of its pixels; each action's images shuffled."""
    groups = view.pool_labels if view.pool_labels is not None else kmeans(view.pool.flatten(1), clusters,
                                                                           view.generator)
    groups = groups.cpu()
    out = []
    for value in torch.unique(groups):
        idx = torch.nonzero(groups == value).flatten()
        out.append(Members(idx[torch.randperm(idx.shape[0], generator=view.generator)]))
    return out


def kmeans(x: Tensor, k: int, generator: torch.Generator, iterations: int = 20) -> Tensor:
    """Lloyd's k-means from ``k`` distinct random points (seeded by ``generator``); the cluster of each row."""
    x = x.float().cpu()
    centers = x[draw(x.shape[0], k, generator)].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iterations):
        assign = torch.cdist(x, centers).argmin(1)
        for c in range(centers.shape[0]):
            chosen = x[assign == c]
            if chosen.shape[0]:
                centers[c] = chosen.mean(0)
    return assign


# the bandit ------------------------------------------------------------------------------------------------------
@dataclass
class GradientBandit:
    """Preferences ``H`` over actions, a softmax policy, the ``1 / N(a)`` step and the mean-reward baseline;
    actions whose images ran out are left out of the softmax."""

    actions: int
    prefs: Tensor = field(init=False)
    counts: Tensor = field(init=False)
    available: Tensor = field(init=False)
    baseline: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        self.prefs = torch.zeros(self.actions, dtype=torch.float64)
        self.counts = torch.zeros(self.actions, dtype=torch.float64)
        self.available = torch.ones(self.actions, dtype=torch.bool)

    def policy(self) -> Tensor:
        return F.softmax(self.prefs.masked_fill(~self.available, float("-inf")), dim=0)

    def sample(self, generator: torch.Generator) -> int:
        return int(torch.multinomial(self.policy().float(), 1, generator=generator))

    def update(self, action: int, reward: float) -> None:
        pi = self.policy()
        self.steps += 1
        self.baseline += (reward - self.baseline) / self.steps
        self.counts[action] += 1
        grad = -pi
        grad[action] += 1.0
        self.prefs += (reward - self.baseline) / self.counts[action] * grad


@dataclass
class RunningStandardiser:
    """Running mean and variance per reward (Welford); a reward is scored ``(r - mean) / std`` (0 while std is 0)."""

    size: int
    n: int = 0
    mean: Tensor = field(init=False)
    m2: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.mean = torch.zeros(self.size, dtype=torch.float64)
        self.m2 = torch.zeros(self.size, dtype=torch.float64)

    def standardise(self, r: Tensor) -> Tensor:
        r = r.double()
        self.n += 1
        delta = r - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (r - self.mean)
        std = (self.m2 / self.n).sqrt()
        return torch.where(std > 1e-12, (r - self.mean) / std.clamp_min(1e-12), torch.zeros_like(r))


# the rewards -----------------------------------------------------------------------------------------------------
def certainty(y: Tensor) -> Tensor:
    """Mean margin between the two top probabilities of each answer."""
    top = y.topk(min(2, y.shape[1]), dim=1).values
    return (top[:, 0] - top[:, -1]).mean()


def diversity(y: Tensor, recent: Tensor) -> Tensor:
    """Mean over the answers ``y`` of ``sum_k max(0, y_k - ybar_k)``, ``ybar`` the mean of the ``recent`` answers
    (the last ``Delta``, these included)."""
    return (y - recent.mean(0)).clamp_min(0).sum(1).mean()


@dataclass
class OnlineCopy:
    """The thief's copy during the attack: scores the loss reward and now and then takes a few Adam steps on the
    pool images answered so far (kept as pool indices)."""

    model: nn.Module
    pool: Tensor
    lr: float
    idx: list[Tensor] = field(default_factory=list)
    ys: list[Tensor] = field(default_factory=list)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    @torch.no_grad()
    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(self.model.eval()(x).cpu(), y).mean().float()

    def remember(self, idx: Tensor, y: Tensor) -> None:
        self.idx.append(idx)
        self.ys.append(y)

    def train(self, steps: int, batch_size: int, generator: torch.Generator) -> None:
        idx, y = torch.cat(self.idx), torch.cat(self.ys)
        self.model.train()
        for _ in range(steps):
            rows = draw(idx.shape[0], batch_size, generator)
            x = self.pool[idx[rows].to(self.pool.device)]
            loss = soft_cross_entropy(self.model(x), y[rows].to(x.device)).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.model.eval()
