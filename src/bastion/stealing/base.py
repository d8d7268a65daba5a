"""Model stealing: what a thief sees and does, what a defender puts in its way, and their registries.

* A thief sees a :class:`QueryAPI`: the deployed model's answers (probabilities ``(N, C)``, or labels ``(N,)``
  when the deployment answers top-1 only), never its gradients or weights, under a hard total query budget: a
  batch that would pass it is refused whole with ``QueryBudgetExceeded`` before anything is sent.
* An extraction attack is ``fn(view: ThiefView, *, param=default, ...) -> None``. It spends the budget through
  ``view.ask(x)``; the view keeps what was asked and answered and, each time the query count reaches one of the
  budget's checkpoints, scores a copy trained on everything answered so far (:mod:`bastion.stealing.copy`), or
  made by the attack's own solver when it proposed one (``view.propose``). The attack only decides *what* to ask.
* An output defense is ``fn(victim: nn.Module, ctx: DefenseContext, *, param=default, ...) -> nn.Module``: a module
  that wraps the victim and answers perturbed probabilities or labels (its ``answers`` attribute says which). It
  is what is deployed, so honest users see the same answers as the thief.
* A detector is ``fn(ctx: DefenseContext, *, param=default, ...) -> Detector``: the state kept for one client;
  ``observe(x)`` takes that client's next queries and says, per query, whether the client is flagged by then.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import BastionError, InvalidInputError, QueryBudgetExceeded
from bastion.registry import Registry, check_params, keyword_defaults  # noqa: F401 (check_params re-exported)

Answer = Literal["probs", "labels"]
AttackAccess = Literal["probs", "labels", "any"]


class ReplayDiverged(BastionError):
    """A resumed run asked different queries than the recorded ones (the rest is asked of the victim again)."""


# the victim's answers -----------------------------------------------------------------------------------------
def as_probabilities(out: Tensor) -> Tensor:
    """Scores as probabilities: rows that already are (non-negative, summing to 1) are kept, logits go through a
    softmax."""
    out = out.float()
    if out.numel() and bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones(out.shape[0]), atol=1e-3):
        return out
    return F.softmax(out, dim=1)


def answers_of(backend: nn.Module | Callable[[Tensor], Tensor]) -> Answer | None:
    """What a backend answers when it says so (an output defense's ``answers``); None: known at the first answer."""
    return getattr(backend, "answers", None)


def _digest(x: Tensor) -> str:
    return hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class Transcript:
    """The answered queries, batch by batch: each batch's size and a digest of its inputs, and the answers.

    Inputs are not kept here (a resumed attack asks them again, deterministically); the digests show that it did.
    """

    sizes: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    answers: list[Tensor] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def add(self, x: Tensor, answer: Tensor) -> None:
        self.sizes.append(int(x.shape[0]))
        self.digests.append(_digest(x))
        self.answers.append(answer.detach().cpu())


class QueryAPI:
    """A deployed model behind a hard total query budget. See the module docstring.

    Args:
        backend: the deployed model (a local module, an output defense around one, or a ``RemoteModel``);
            ``(N, C)`` scores (logits or probabilities) or ``(N,)`` labels.
        budget: total queries the thief may send; one more is refused.
        batch_size: largest batch sent to the backend in one call.
        replay: a transcript of an earlier run of the same attack: its answers are given again, without asking
            the backend, as long as the attack asks the same inputs in the same batches.
    """

    def __init__(self, backend: nn.Module | Callable[[Tensor], Tensor], *, budget: int, batch_size: int = 512,
                 replay: Transcript | None = None) -> None:
        if budget < 1:
            raise InvalidInputError(f"A query budget of {budget} allows no query; give a budget of at least 1.")
        self.backend = backend
        self.budget = budget
        self.batch_size = batch_size
        self.answers: Answer | None = answers_of(backend)
        self.num_classes: int | None = getattr(backend, "num_classes", None)
        self.transcript = Transcript()
        self._replay = replay
        self.replayed = 0  # queries answered from the replay
        self.diverged = False

    @property
    def used(self) -> int:
        return self.transcript.total

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def query(self, x: Tensor) -> Tensor:
        """The answers to ``x``: ``(N, C)`` probabilities or ``(N,)`` int64 labels (see ``answers``)."""
        n = int(x.shape[0])
        if n > self.remaining:
            raise QueryBudgetExceeded(
                f"The query budget of {self.budget} would be exceeded ({self.used} used, {n} asked); the batch "
                "was not sent. Raise the budget or ask fewer queries.")
        answer = self._from_replay(x)
        if answer is None:
            answer = self._normalize(self._ask(x))
        self.transcript.add(x, answer)
        return answer

    def _from_replay(self, x: Tensor) -> Tensor | None:
        replay, i = self._replay, len(self.transcript.sizes)
        if replay is None or self.diverged or i >= len(replay.sizes):
            return None
        if replay.sizes[i] != x.shape[0] or replay.digests[i] != _digest(x):
            self.diverged = True
            return None
        self.replayed += int(x.shape[0])
        answer = replay.answers[i].to(x.device)
        self.answers = "probs" if answer.dim() == 2 else "labels"
        if answer.dim() == 2:
            self.num_classes = int(answer.shape[1])
        return answer

    def _ask(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            parts = [self.backend(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts).detach() if parts else self.backend(x).detach()

    def _normalize(self, out: Tensor) -> Tensor:
        if out.dim() == 1:
            self.answers = "labels"
            return out.long()
        self.num_classes = int(out.shape[1])
        if self.answers == "labels":
            return out.argmax(1)
        self.answers = "probs"
        return as_probabilities(out)


# what the thief has -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VictimSpec:
    """What the thief knows of the victim: its input shape and value range, and how many classes it has."""

    shape: tuple[int, ...]
    num_classes: int
    lower: float = 0.0
    upper: float = 1.0


Checkpoint = Callable[[int, Tensor, Tensor], None]  # (queries, inputs so far, answers so far)


@dataclass
class ThiefView:
    """What an extraction attack works with. ``pool``: the thief's own unlabeled data (natural images of another
    domain, or noise); ``seed``: a few unlabeled problem-domain inputs (for the attacks that start from a seed set);
    ``pool_labels``: the pool's own coarse labels when it has them (KnockoffNets' adaptive strategy uses them as
    actions), else None; ``fit(x, answers)``: the thief's training recipe (a fresh copy trained on answered
    queries); ``checkpoints``: the query counts at which ``on_checkpoint`` is told what was answered so far; it
    scores ``copy(x, answers)``, which is ``fit`` unless the attack made its own copy with :meth:`propose`."""

    api: QueryAPI
    pool: Tensor
    seed: Tensor
    spec: VictimSpec
    fit: Callable[[Tensor, Tensor], nn.Module]
    generator: torch.Generator
    pool_labels: Tensor | None = None
    checkpoints: tuple[int, ...] = ()
    on_checkpoint: Checkpoint | None = None
    solver: Callable[[Tensor, Tensor], nn.Module] | None = None
    inputs: list[Tensor] = field(default_factory=list)
    replies: list[Tensor] = field(default_factory=list)
    _next: int = 0

    @property
    def answers(self) -> Answer | None:
        """``"probs"`` or ``"labels"``; None before the first answer of a backend that does not say."""
        return self.api.answers

    @property
    def remaining(self) -> int:
        return self.api.remaining

    def ask(self, x: Tensor) -> Tensor:
        """Query ``x`` (cut at the budget's checkpoints; at most ``remaining`` rows are sent, the rest refused)."""
        if x.shape[0] > self.remaining:
            raise QueryBudgetExceeded(
                f"The attack asked {x.shape[0]} queries with {self.remaining} left of {self.api.budget}; the batch "
                "was not sent.")
        out: list[Tensor] = []
        start = 0
        while start < x.shape[0]:
            stop = min(x.shape[0], start + self._to_checkpoint())
            part = x[start:stop]
            out.append(self.api.query(part))
            self.inputs.append(part.detach())
            self.replies.append(out[-1])
            start = stop
            self._maybe_checkpoint()
        return torch.cat(out) if out else x.new_zeros(0)

    def propose(self, solve: Callable[[Tensor, Tensor], nn.Module]) -> None:
        """Hand over how this attack makes its copy: ``solve(x, answers) -> model`` on everything answered so far
        (a closed-form solution, or the recipe on hard labels); :meth:`copy` uses it instead of ``fit``. A function,
        not a model, because a checkpoint is reached inside :meth:`ask`, before the attack sees those answers."""
        self.solver = solve

    def copy(self, x: Tensor, answers: Tensor) -> nn.Module:
        """The copy a checkpoint scores: the attack's proposed ``solve(x, answers)``, else ``fit(x, answers)``."""
        return (self.solver or self.fit)(x, answers)

    def answered(self) -> tuple[Tensor, Tensor]:
        """All inputs asked so far and their answers."""
        if not self.inputs:
            return self.pool[:0], torch.zeros(0)
        return torch.cat(self.inputs), torch.cat(self.replies)

    def finish(self) -> None:
        """Score the final copy if the attack stopped between checkpoints (its pool or its ideas ran out)."""
        if self.api.used and (not self._passed() or self._passed()[-1] != self.api.used):
            self._score(self.api.used)

    def _passed(self) -> list[int]:
        return [c for c in self.checkpoints if c <= self.api.used]

    def _to_checkpoint(self) -> int:
        ahead = [c for c in self.checkpoints if c > self.api.used]
        return (ahead[0] - self.api.used) if ahead else self.remaining

    def _maybe_checkpoint(self) -> None:
        if self.api.used in self.checkpoints:
            self._score(self.api.used)

    def _score(self, queries: int) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(queries, *self.answered())


# what the defender has ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefenseContext:
    """What a defender builds its defenses with: its own in-distribution data (the victim's validation split,
    labelled), the victim's spec, a generator and the victim itself. Never the thief's queries or pool."""

    data: Tensor
    labels: Tensor
    spec: VictimSpec
    generator: torch.Generator
    victim: nn.Module | None = None  # the model the defender deploys (detectors may read its predicted classes)


class Detector(Protocol):
    """The state a detector keeps for one client."""

    def observe(self, x: Tensor) -> Tensor:
        """Take the client's next queries ``(N, ...)``; ``(N,)`` bool: is the client flagged after each of them."""
        ...


# registries ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StealAttackSpec:
    name: str
    fn: Callable[..., None]
    access: AttackAccess  # what the attack is designed for; every attack also runs on label answers
    paper: str
    defaults: dict[str, Any]


@dataclass(frozen=True)
class OutputDefenseSpec:
    name: str
    fn: Callable[..., nn.Module]
    answers: Answer
    paper: str
    defaults: dict[str, Any]


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    fn: Callable[..., Detector]
    paper: str
    defaults: dict[str, Any]


STEAL_ATTACKS: Registry[StealAttackSpec] = Registry("extraction attack", "bastion steal list")
OUTPUT_DEFENSES: Registry[OutputDefenseSpec] = Registry("output defense", "bastion steal list")
DETECTORS: Registry[DetectorSpec] = Registry("extraction detector", "bastion steal list")


def register_steal_attack(name: str, *, access: AttackAccess, paper: str) -> Callable[[Callable], Callable]:
    """Register ``fn(view: ThiefView, *, param=default, ...) -> None``; defaults are the paper's."""
    return STEAL_ATTACKS.decorator(name, lambda fn: StealAttackSpec(name, fn, access, paper, keyword_defaults(fn)))


def register_output_defense(name: str, *, answers: Answer, paper: str) -> Callable[[Callable], Callable]:
    """Register ``fn(victim, ctx: DefenseContext, *, param=default, ...) -> nn.Module`` (with ``.answers``)."""
    return OUTPUT_DEFENSES.decorator(name, lambda fn: OutputDefenseSpec(name, fn, answers, paper, keyword_defaults(fn)))


def register_detector(name: str, *, paper: str) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx: DefenseContext, *, param=default, ...) -> Detector`` (one call per client)."""
    return DETECTORS.decorator(name, lambda fn: DetectorSpec(name, fn, paper, keyword_defaults(fn)))


class OutputDefense(nn.Module, ABC):
    """Base of the output defenses: wraps the victim, answers ``answers`` ("probs" rows summing to 1, or labels).
    Subclasses implement ``perturb(x, probs)``; the victim's own outputs go through :func:`as_probabilities`."""

    answers: Answer = "probs"

    def __init__(self, victim: nn.Module) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            probs = as_probabilities(self.victim(x))
        return self.perturb(x, probs)

    @abstractmethod
    def perturb(self, x: Tensor, probs: Tensor) -> Tensor:
        """The answers to ``x`` given the victim's probabilities ``probs``."""
