"""A small synthetic flow table for the constrained-attack tests: an immutable port, an integer packet count, integer
bytes, a duration, a derived mean = bytes / packets, and an integer minimum that may not exceed the mean."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.threats.tabular import TabularThreat

COLUMNS = ("port", "packets", "bytes", "duration", "mean", "min")
RELATIONS = ("[mean] == [bytes] / [packets]", "[min] <= [mean]")
LOWER = torch.tensor([0.0, 1, 0, 0, 0, 0])
UPPER = torch.tensor([1024.0, 101, 20000, 1e6, 1500, 1500])


def flow_threat(norm: str = "linf", eps: float | Tensor = 0.1, **kw: object) -> TabularThreat:
    return TabularThreat(COLUMNS, norm, eps, LOWER, UPPER,  # type: ignore[arg-type]
                         integer=torch.tensor([True, True, True, False, False, True]),
                         mutable=torch.tensor([False, True, True, True, True, True]), relations=RELATIONS, **kw)


def flows(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` consistent rows (float32, raw units) and labels: class 1 sends more, smaller packets, faster."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=g)
    packets = torch.randint(2, 40, (n,), generator=g) + 30 * label
    small, large = torch.randint(40, 200, (n,), generator=g), torch.randint(150, 400, (n,), generator=g)
    size = torch.where(label.bool(), small, large)
    byts = packets * size
    duration = torch.rand(n, generator=g) * 6e5 + 2e5 - 1.5e5 * label
    mean = byts / packets
    low = torch.floor(mean * torch.rand(n, generator=g) * 0.9)
    port = torch.tensor([22.0, 53, 80, 443])[torch.randint(0, 4, (n,), generator=g)]
    rows = torch.stack([port, packets.float(), byts.float(), duration, mean, low], 1)
    return rows.float(), label


class Scaled(nn.Module):
    """A model over raw units: its first step scales every column into [0, 1] by the table's bounds."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("lower", LOWER.clone())
        self.register_buffer("span", UPPER - LOWER)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner((x - self.lower) / self.span)


def trained_mlp(seed: int = 0, epochs: int = 150) -> nn.Module:
    """A small MLP trained on the flows (a few hundred Adam steps on 256 rows; about a second)."""
    x, y = flows(256, seed=seed + 100)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Scaled(nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_mlp(classes: int, *, gain: float = 5.0, seed: int = 0) -> nn.Module:
    """An untrained tanh MLP whose first layer is centred on the table's mean row with weights ``gain`` times a normal
    draw, so its decision boundaries run through the data (a default-initialised one calls every flow one class)."""
    g = torch.Generator().manual_seed(seed)
    inner = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, classes))
    centre = ((flows(256, seed=9)[0] - LOWER) / (UPPER - LOWER)).mean(0)
    with torch.no_grad():
        for p in inner.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        inner[0].weight.mul_(gain)
        inner[0].bias.copy_(-inner[0].weight @ centre)
    return Scaled(inner).eval()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(weights: list[float], bias: float) -> nn.Module:
    """Two classes, logits (0, w . scaled(x) + b): the loss of class 0 rises along w."""
    layer = nn.Linear(6, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros(6), torch.tensor(weights)]))
        layer.bias.copy_(torch.tensor([0.0, bias]))
    model = Scaled(layer).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
