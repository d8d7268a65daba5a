"""IDSGAN inside a tabular threat with feature constraints: a generator of evasive flows trained against a black box.

Lin, Shi & Xue 2022, "IDSGAN: Generative Adversarial Networks for Attack Generation against Intrusion Detection",
PAKDD (arXiv 1809.02077). A generator G takes an attack flow and a noise vector and outputs new values for the
flow's non-functional features (the functional ones, which carry the attack, are kept); a discriminator D, a
substitute for the black-box detector, learns from the detector's *labels* on the generated flows and on normal
traffic, and G learns through D to make flows the detector lets through. Wasserstein GAN training (Arjovsky et
al. 2017) as the paper: D minimises ``E_{passed} D(s) - E_{caught} D(s)``, G minimises ``E D(G(flow, noise))``,
both with RMSProp, D's weights clipped to [-c, c] after each step, several D steps per G step.

Carried into the constrained space:
- the non-functional features are the threat's free features; G outputs ``tanh`` values in [-1, 1] per free
  feature, read as a change of ``eps * output`` in the scaled space, so every output starts inside the budget;
  ``constrained.relax`` (ball, box, immutables, derived features recomputed; differentiable, so G's gradient
  flows through the relations) shapes it for D, and every flow sent to the detector is ``threat.project`` of it
  (integers, relations), checked with ``threat.contains`` and offered to the tracker of the best valid candidate;
- "passed" means the detector's label is an adversarial one for that flow (the target class if targeted, any
  class but the flow's own otherwise), so D is conditioned on that class (a one-hot beside the scaled row): for
  the binary detector of the paper it is the same class for every flow;
- normal traffic for D: the clean inputs with the detector's labels, and ``reference`` rows (benign flows the
  attacker knows, paired with the batch's classes) when given.
Access is "decision": only the detector's labels are used.

Defaults: the paper's noise dimension 9, batch size 64, RMSProp, weight clipping 0.01 (WGAN's), 5 D steps per G
step (WGAN's n_critic), five linear layers in G (ReLU) and D (LeakyReLU) as the paper; chosen to run in seconds on a
CPU: hidden width 64, 100 epochs over the attacked flows, learning rate 1e-3 (the paper's 1e-4 with its much
longer training on NSL-KDD learns too little in 100 epochs of a small batch). Costs ``epochs + 2`` detector
queries per flow (one per epoch, the clean flow, the final generation) plus one per reference row.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.constrained import Best, Threat, check_count, check_threat, free_mask, relax, scale_of
from bastion.attacks.losses import is_adversarial
from bastion.blackbox.target import query_labels
from bastion.errors import InvalidInputError
from bastion.oracle import attribute

PAPER = ("Lin, Shi & Xue 2022, IDSGAN: Generative Adversarial Networks for Attack Generation against Intrusion "
         "Detection (PAKDD)")


@register_attack("idsgan", norms=("linf", "l2"), goal="budget", access="decision", paper=PAPER, randomized=True,
                 threats=("tabular",))
def idsgan(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    threat: Threat,
    *,
    targeted: bool = False,
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    critic_steps: int = 5,
    clip: float = 0.01,
    noise_dim: int = 9,
    hidden: int = 64,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Train G and D for ``epochs`` epochs against ``model``'s labels, then generate once more; returns per flow
    the best valid candidate sent to the detector (one that passes first, then the smallest change)."""
    check_threat(threat, inputs, "idsgan")
    check_count("idsgan", epochs=epochs or 1, batch_size=batch_size, critic_steps=critic_steps, noise_dim=noise_dim,
                hidden=hidden)
    gen = generator if generator is not None else torch.Generator(inputs.device).manual_seed(0)
    gan = Gan(model, inputs, labels, threat, targeted=targeted, noise_dim=noise_dim, hidden=hidden, generator=gen,
              reference=reference)
    gan.train(epochs=epochs, batch_size=batch_size, lr=lr, critic_steps=critic_steps, clip=clip)
    gan.generate(torch.arange(inputs.shape[0], device=inputs.device))
    return gan.best.result(threat.project(inputs.clone(), inputs))


def _layers(sizes: list[int], act: nn.Module, generator: torch.Generator, like: Tensor) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between them, initialised from ``generator`` (PyTorch's uniform
    fan-in bound; the global RNG is never drawn)."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layer = nn.utils.skip_init(nn.Linear, a, b, device=like.device, dtype=like.dtype)
        bound = a ** -0.5
        with torch.no_grad():
            for p in (layer.weight, layer.bias):
                p.copy_((torch.rand(p.shape, generator=generator, device=like.device) * 2 - 1) * bound)
        mods += [layer] if i == len(sizes) - 2 else [layer, act]
    return nn.Sequential(*mods)


class Gan:
    """G, D and the data they learn from; every flow sent to the detector goes through ``query``."""

    def __init__(self, model: nn.Module, inputs: Tensor, labels: Tensor, threat: Threat, *, targeted: bool,
                 noise_dim: int, hidden: int, generator: torch.Generator, reference: Tensor | None = None) -> None:
        self.model, self.inputs, self.labels, self.threat = model, inputs.detach(), labels, threat
        self.targeted, self.noise_dim, self.gen = targeted, noise_dim, generator
        d, f = inputs.shape[1], int(threat.free.sum())
        self.classes = int(labels.max()) + 1 if labels.numel() else 1
        self.g = _layers([d + noise_dim] + [hidden] * 4 + [max(f, 1)], nn.ReLU(), generator, inputs)
        self.d = _layers([d + self.classes] + [hidden] * 4 + [1], nn.LeakyReLU(0.2), generator, inputs)
        self.free = threat.free.to(inputs.device).nonzero().squeeze(1)
        self.best = Best(inputs, labels, targeted)
        self.clean_pass, self.clean_pred = self.query(inputs, torch.arange(inputs.shape[0], device=inputs.device))[1:]
        self.reference = self._reference(reference)

    def _reference(self, reference: Tensor | None) -> tuple[Tensor, Tensor]:
        """Reference rows and the detector's labels of them (each query booked to one flow, in turn); without
        reference rows, the clean flows themselves (a clean flow of another class shows D what passes)."""
        if reference is None:
            return self.inputs, self.clean_pred
        ref = torch.as_tensor(reference).to(device=self.inputs.device, dtype=self.inputs.dtype)
        if ref.dim() != 2 or ref.shape[1] != self.inputs.shape[1]:
            raise InvalidInputError(f"idsgan: reference must be benign rows (M, {self.inputs.shape[1]}); got "
                                    f"shape {tuple(ref.shape)}.")
        with attribute(self.model, torch.arange(ref.shape[0]) % self.inputs.shape[0]):
            return ref, query_labels(self.model, ref)

    def scaled(self, x: Tensor) -> Tensor:
        lower = self.threat.lower.to(x.device, x.dtype)
        return (x - lower) / scale_of(self.threat, x)

    def propose(self, rows: Tensor) -> Tensor:
        """G's flows for ``rows`` with fresh noise, relaxed into the threat (differentiable in G's weights)."""
        x0 = self.inputs[rows]
        noise = torch.randn((rows.numel(), self.noise_dim), generator=self.gen, device=x0.device, dtype=x0.dtype)
        out = torch.tanh(self.g(torch.cat([self.scaled(x0), noise], 1)))
        sub = self.threat.select(rows)
        delta = torch.zeros_like(x0)
        delta[:, self.free] = out[:, : self.free.numel()] * sub.eps_for(x0).to(x0.dtype)[:, None]
        return relax(sub, x0 + delta * scale_of(self.threat, x0) * free_mask(self.threat, x0), x0)

    def query(self, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Repair ``x``, ask the detector, offer to ``best``; returns the repaired flows, which passed and the
        detector's labels."""
        sub, x0 = self.threat.select(rows), self.inputs[rows]
        cand = sub.project(x.detach(), x0)
        with attribute(self.model, rows):
            pred = query_labels(self.model, cand)
        width = max(self.classes, int(pred.max()) + 1)
        onehot = F.one_hot(pred, width).to(x0.dtype)
        self.best.update(cand, onehot, -sub.distance(cand, x0), sub.contains(cand, x0), rows)
        return cand, is_adversarial(onehot, self.labels[rows], self.targeted), pred

    def critic(self, x: Tensor, cls: Tensor) -> Tensor:
        return self.d(torch.cat([self.scaled(x), F.one_hot(cls, self.classes).to(x.dtype)], 1)).squeeze(1)

    def generate(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """G's repaired flows for ``rows`` (fresh noise) and which of them the detector let pass."""
        with torch.no_grad():
            return self.query(self.propose(rows), rows)[:2]

    def train(self, *, epochs: int, batch_size: int, lr: float, critic_steps: int, clip: float) -> None:
        opt_g = torch.optim.RMSprop(self.g.parameters(), lr=lr)
        opt_d = torch.optim.RMSprop(self.d.parameters(), lr=lr)
        n = self.inputs.shape[0]
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.gen, device=self.inputs.device)
            for rows in order.split(batch_size):
                x, cls, passed = self._batch(rows)
                for _ in range(critic_steps):
                    loss_d = _mean(self.critic(x[passed], cls[passed])) - _mean(self.critic(x[~passed], cls[~passed]))
                    opt_d.zero_grad()
                    loss_d.backward()
                    opt_d.step()
                    with torch.no_grad():
                        for p in self.d.parameters():
                            p.clamp_(-clip, clip)
                loss_g = self.critic(self.propose(rows), self.labels[rows]).mean()
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()

    def _batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """D's data for one batch: G's repaired flows, the clean flows and (if any) reference rows, with the class
        each is judged against and whether the detector let it pass."""
        cand, passed = self.generate(rows)
        x0 = self.inputs[rows]
        parts = [(cand, self.labels[rows], passed), (x0, self.labels[rows], self.clean_pass[rows])]
        ref, ref_pred = self.reference
        pick = torch.randint(0, ref.shape[0], (rows.numel(),), generator=self.gen, device=ref.device)
        cls = self.labels[rows]
        hit = ref_pred[pick] == cls if self.targeted else ref_pred[pick] != cls
        parts.append((ref[pick], cls, hit))
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def _mean(t: Tensor) -> Tensor:
    return t.mean() if t.numel() else t.sum()
