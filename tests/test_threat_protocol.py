"""The Threat protocol carries threats beyond Lp balls through the runner: a toy tabular constraint threat (an
immutable feature, an integer feature, a one-hot group, one linear relation) and a toy word-substitution threat over
token ids. The real ones come with the tabular and text modalities; these show that the runner, its re-check and its
defect count need nothing Lp-specific."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import ATTACKS
from bastion.attacks.base import register_attack
from bastion.errors import InvalidInputError
from bastion.evaluation.runner import run_attack
from bastion.threat import LpThreat
from bastion.threats import THREATS, Threat, register_threat, threat_from_dict

# ---- a toy tabular constraint threat -------------------------------------------------------------------------------
# features: 0 immutable (e.g. a protocol flag), 1 integer in [0, 10] (a packet count), 2-4 a one-hot group (a
# category), 5 and 6 continuous in [0, 1], 7 = 5 + 6 (a derived total), in [0, 2].
IMMUTABLE, INTEGER, ONE_HOT, FREE, TOTAL = 0, 1, slice(2, 5), slice(5, 7), 7


@dataclass(frozen=True)
class ToyTabularThreat:
    eps: float  # L-inf budget on the continuous features 5, 6 (the integer may move by 10 * eps, rounded)
    kind: ClassVar[str] = "toy-tabular"

    def contains(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        ok = x_adv[:, IMMUTABLE] == inputs[:, IMMUTABLE]
        count = x_adv[:, INTEGER]
        ok &= (count == count.round()) & (count >= 0) & (count <= 10)
        ok &= (count - inputs[:, INTEGER]).abs() <= round(10 * self.eps)
        group = x_adv[:, ONE_HOT]
        ok &= ((group == 0) | (group == 1)).all(1) & (group.sum(1) == 1)
        free = x_adv[:, FREE]
        ok &= ((free - inputs[:, FREE]).abs() <= self.eps + 1e-6).all(1) & (free >= 0).all(1) & (free <= 1).all(1)
        return ok & ((x_adv[:, TOTAL] - free.sum(1)).abs() <= 1e-5)

    def project(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        """Repair: restore the immutable feature, round and bound the integer, snap the group to its largest entry,
        clip the free features to the ball and box, recompute the derived total."""
        out = x_adv.clone()
        out[:, IMMUTABLE] = inputs[:, IMMUTABLE]
        step = round(10 * self.eps)
        out[:, INTEGER] = torch.minimum(torch.maximum(out[:, INTEGER].round(), inputs[:, INTEGER] - step),
                                        inputs[:, INTEGER] + step).clamp(0, 10)
        out[:, ONE_HOT] = nn.functional.one_hot(out[:, ONE_HOT].argmax(1), 3).to(out)
        out[:, FREE] = torch.minimum(torch.maximum(out[:, FREE], inputs[:, FREE] - self.eps),
                                     inputs[:, FREE] + self.eps).clamp(0, 1)
        out[:, TOTAL] = out[:, FREE].sum(1)
        return out

    def distance(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        return (x_adv[:, FREE] - inputs[:, FREE]).abs().amax(1)

    def random_start(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype) * 2 - 1
        return self.project(inputs + self.eps * noise, inputs)

    def select(self, index: Tensor) -> ToyTabularThreat:
        return self

    def validate(self, inputs: Tensor) -> None:
        if inputs.dim() != 2 or inputs.shape[1] != 8:
            raise InvalidInputError(f"toy tabular inputs have 8 features; got shape {tuple(inputs.shape)}.")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "eps": self.eps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyTabularThreat:
        return cls(float(data["eps"]))


# ---- a toy word-substitution threat ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToySubstitutionThreat:
    """Token ids ``(N, L)``; position i may take any token of ``table[inputs[:, i]]`` (``-1`` pads), at most
    ``max_edits`` positions change."""

    table: Tensor  # (vocabulary, K) substitutes per token, -1 padded
    max_edits: int
    kind: ClassVar[str] = "toy-substitution"

    def _allowed(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        subs = self.table[inputs]  # (N, L, K)
        return (x_adv == inputs) | (subs == x_adv[..., None]).any(-1)

    def contains(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        return self._allowed(x_adv, inputs).all(1) & (self.distance(x_adv, inputs) <= self.max_edits)

    def project(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        """Repair: undo substitutions outside the sets, then keep only the first ``max_edits`` changes."""
        out = torch.where(self._allowed(x_adv, inputs), x_adv, inputs)
        changed = out != inputs
        keep = changed & (changed.long().cumsum(1) <= self.max_edits)
        return torch.where(keep, out, inputs)

    def distance(self, x_adv: Tensor, inputs: Tensor) -> Tensor:
        return (x_adv != inputs).sum(1).float()

    def random_start(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return inputs.clone()

    def select(self, index: Tensor) -> ToySubstitutionThreat:
        return self

    def validate(self, inputs: Tensor) -> None:
        if inputs.is_floating_point() or inputs.min() < 0 or inputs.max() >= self.table.shape[0]:
            raise InvalidInputError("token ids must be integers inside the vocabulary.")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "table": self.table.tolist(), "max_edits": self.max_edits}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToySubstitutionThreat:
        return cls(torch.tensor(data["table"]), int(data["max_edits"]))


# ---- attacks for them (greedy, and one that breaks the rules on purpose) -------------------------------------------
def _tabular_pgd(model: nn.Module, inputs: Tensor, labels: Tensor, threat: ToyTabularThreat, *,
                 targeted: bool = False, generator: torch.Generator | None = None, steps: int = 20,
                 repair: bool = True) -> Tensor:
    """Signed-gradient ascent on the relaxed features, repaired after every step (``repair=False``: the raw
    relaxed point is returned, which breaks the constraints: the runner must repair it and count the defect)."""
    x = threat.random_start(inputs, generator)
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), labels)
        (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
        moved = x.detach() + 0.05 * grad.sign()
        x = threat.project(moved, inputs) if repair else moved
    return x.detach()


def _greedy_substitution(model: nn.Module, inputs: Tensor, labels: Tensor, threat: ToySubstitutionThreat, *,
                         targeted: bool = False, generator: torch.Generator | None = None,
                         honest: bool = True) -> Tensor:
    """Greedy word substitution: at each of ``max_edits`` rounds take the single substitution that most raises
    the loss (``honest=False`` ignores the edit limit, which the runner must repair)."""
    x = inputs.clone()
    for _ in range(threat.max_edits if honest else inputs.shape[1]):
        best, best_loss = x, nn.functional.cross_entropy(model(x), labels, reduction="none")
        for pos in range(inputs.shape[1]):
            for k in range(threat.table.shape[1]):
                cand = x.clone()
                sub = threat.table[inputs[:, pos], k]
                cand[:, pos] = torch.where(sub >= 0, sub, x[:, pos])
                loss = nn.functional.cross_entropy(model(cand), labels, reduction="none")
                better = loss > best_loss
                best = torch.where(better[:, None], cand, best)
                best_loss = torch.maximum(loss, best_loss)
        x = best
    return x


@pytest.fixture(scope="module", autouse=True)
def _toys() -> Iterator[None]:
    """Register the toy threats and attacks for this module only (the contract suite does not see them)."""
    register_threat("toy-tabular")(ToyTabularThreat)
    register_threat("toy-substitution")(ToySubstitutionThreat)
    register_attack("toy-tabular-pgd", norms=(), goal="budget", paper="test", threats=("toy-tabular",))(_tabular_pgd)
    register_attack("toy-greedy-sub", norms=(), goal="budget", paper="test",
                    threats=("toy-substitution",))(_greedy_substitution)
    yield
    for name in ("toy-tabular", "toy-substitution"):
        THREATS._entries.pop(name)
    for name in ("toy-tabular-pgd", "toy-greedy-sub"):
        ATTACKS._entries.pop(name)


def _tabular_data(n: int = 64) -> tuple[Tensor, Tensor, nn.Module]:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 8)
    x[:, IMMUTABLE] = torch.randint(0, 2, (n,), generator=g).float()
    x[:, INTEGER] = torch.randint(0, 11, (n,), generator=g).float()
    x[torch.arange(n), 2 + torch.randint(0, 3, (n,), generator=g)] = 1.0
    x[:, FREE] = torch.rand(n, 2, generator=g)
    x[:, TOTAL] = x[:, FREE].sum(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every point; the attack must move it
    return x, y, model


def _text_data() -> tuple[Tensor, Tensor, nn.Module, ToySubstitutionThreat]:
    g = torch.Generator().manual_seed(0)
    table = torch.randint(0, 20, (20, 3), generator=g)
    table[::4, 2] = -1
    x = torch.randint(0, 20, (40, 6), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(48, 2)).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y, model, ToySubstitutionThreat(table, 2)


def test_tabular_constraints_hold_through_the_runner() -> None:
    x, y, model = _tabular_data()
    threat = ToyTabularThreat(0.2)
    assert isinstance(threat, Threat) and threat.contains(x, x).all()
    result = run_attack(model, x, y, threat, "toy-tabular-pgd", generator=torch.Generator().manual_seed(0))
    assert result.clean_accuracy == 1.0 and 0 < int(result.success.sum()) < len(y)  # broke some, not all
    assert threat.contains(result.adversarial, x).all()
    assert result.outside_threat == 0  # the honest attack repairs every step itself
    with torch.no_grad():
        assert torch.equal(model(result.adversarial).argmax(1) != y, result.success)
    assert torch.all(result.norm[result.success] <= 0.2 + 1e-6) and torch.isinf(result.norm[~result.success]).all()


def test_runner_repairs_and_counts_an_attack_that_breaks_the_constraints() -> None:
    x, y, model = _tabular_data()
    threat = ToyTabularThreat(0.2)
    result = run_attack(model, x, y, threat, "toy-tabular-pgd", repair=False,
                        generator=torch.Generator().manual_seed(0))
    assert result.outside_threat == len(y)  # every raw relaxed point broke a constraint: each is a defect
    assert threat.contains(result.adversarial, x).all()  # ... and was repaired before the re-check


def test_substitutions_hold_through_the_runner() -> None:
    x, y, model, threat = _text_data()
    result = run_attack(model, x, y, threat, "toy-greedy-sub")
    assert 0 < int(result.success.sum()) < len(y) and result.outside_threat == 0
    assert threat.contains(result.adversarial, x).all()
    assert result.norm[result.success].max() <= 2  # the distance is the number of edits
    greedy = run_attack(model, x, y, threat, "toy-greedy-sub", honest=False)
    assert greedy.outside_threat > 0 and threat.contains(greedy.adversarial, x).all()


def test_threats_round_trip_through_their_dicts() -> None:
    _, _, _, sub = _text_data()
    lp = LpThreat("l2", 0.5, lower=torch.tensor([0.0, -1.0]), upper=torch.tensor([1.0, 1.0]),
                  mask=torch.tensor([True, False]))
    for threat in (ToyTabularThreat(0.2), sub, lp, LpThreat("linf", 0.3)):
        again = threat_from_dict(threat.to_dict())
        assert type(again) is type(threat) and again.to_dict() == threat.to_dict()


def test_an_attack_refuses_a_threat_kind_it_does_not_declare() -> None:
    x, y, model = _tabular_data()
    with pytest.raises(InvalidInputError, match="works on lp threats, not toy-tabular"):
        run_attack(model, x, y, ToyTabularThreat(0.2), "pgd")
    with pytest.raises(InvalidInputError, match="works on toy-tabular threats, not lp"):
        run_attack(model, x, y, LpThreat("linf", 0.1, lower=-1e3, upper=1e3), "toy-tabular-pgd")


# ---- a structured batch: token ids with an attention mask ----------------------------------------------------------
class MaskedBag(nn.Module):
    """A classifier of ``{"ids": (N, L) long, "mask": (N, L) bool}``: the mean embedding of the unmasked tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(20, 8), nn.Linear(8, 2)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        m = batch["mask"].float()[..., None]
        return self.head((self.embed(batch["ids"]) * m).sum(1) / m.sum(1).clamp_min(1))


@dataclass(frozen=True)
class MaskedSubstitutionThreat:
    """``ToySubstitutionThreat`` on ``batch["ids"]``; the mask may never change."""

    inner: ToySubstitutionThreat
    kind: ClassVar[str] = "toy-substitution"

    def contains(self, x_adv: dict[str, Tensor], inputs: dict[str, Tensor]) -> Tensor:
        return self.inner.contains(x_adv["ids"], inputs["ids"]) & (x_adv["mask"] == inputs["mask"]).all(1)

    def project(self, x_adv: dict[str, Tensor], inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"ids": self.inner.project(x_adv["ids"], inputs["ids"]), "mask": inputs["mask"].clone()}

    def distance(self, x_adv: dict[str, Tensor], inputs: dict[str, Tensor]) -> Tensor:
        return self.inner.distance(x_adv["ids"], inputs["ids"])

    def random_start(self, inputs: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in inputs.items()}

    def select(self, index: Tensor) -> MaskedSubstitutionThreat:
        return self

    def validate(self, inputs: dict[str, Tensor]) -> None:
        self.inner.validate(inputs["ids"])

    def to_dict(self) -> dict[str, Any]:
        return self.inner.to_dict()


def _masked_greedy(model: nn.Module, inputs: dict[str, Tensor], labels: Tensor, threat: MaskedSubstitutionThreat,
                   *, targeted: bool = False, generator: torch.Generator | None = None, flip_mask: bool = False
                   ) -> dict[str, Tensor]:
    ids = _greedy_substitution(lambda i: model({"ids": i, "mask": inputs["mask"]}), inputs["ids"], labels,
                               threat.inner)
    return {"ids": ids, "mask": ~inputs["mask"] if flip_mask else inputs["mask"].clone()}


def test_a_structured_batch_goes_through_the_runner_and_its_counter() -> None:
    register_attack("toy-masked-greedy", norms=(), goal="budget", paper="test",
                    threats=("toy-substitution",))(_masked_greedy)
    try:
        x, _, _, sub = _text_data()
        mask = torch.ones_like(x, dtype=torch.bool)
        mask[:, 4:] = torch.arange(40)[:, None] % 3 != 0  # some sequences are shorter
        batch = {"ids": x, "mask": mask}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            model = MaskedBag().eval()
        with torch.no_grad():
            y = model(batch).argmax(1)
        threat = MaskedSubstitutionThreat(sub)
        result = run_attack(model, batch, y, threat, "toy-masked-greedy")
        assert 0 < int(result.success.sum()) < len(y) and result.outside_threat == 0
        assert threat.contains(result.adversarial, batch).all()
        assert int(result.counts.forward.min()) > 0  # the counting wrapper attributed the dict batch's passes
        cheat = run_attack(model, batch, y, threat, "toy-masked-greedy", flip_mask=True)
        assert cheat.outside_threat == len(y) and torch.equal(cheat.adversarial["mask"], mask)
    finally:
        ATTACKS._entries.pop("toy-masked-greedy")
