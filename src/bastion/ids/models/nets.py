"""Neural detectors over a flow's scaled feature vector: an MLP, a 1-D CNN and a GRU.

The three families are those Khamis & Matrawy compare under adversarial training on flow features ("Evaluation of
adversarial training on different types of neural networks in deep learning-based IDSs", ISNCC 2020: DNN, CNN,
RNN). The 1-D CNN follows Vinayakumar et al. ("Applying convolutional neural network for network intrusion
detection", ICACCI 2017) in convolving over the feature vector; the GRU follows Xu et al. ("An intrusion detection
system using a deep neural network with gated recurrent units", IEEE Access 2018) in reading features as a sequence.
The sizes are bastion's defaults, chosen to train in seconds on 2 CPU cores, not the papers' layer sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.ids.models.base import register_detector, seeded_init


@register_detector("mlp", "Two hidden ReLU layers of 128 and 64 units.", "Khamis & Matrawy 2020 (DNN)")
def mlp(in_features: int, num_classes: int, *, generator: torch.Generator, width: int = 128,
        depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = []
    d = in_features
    for i in range(depth):
        out = max(width // 2**i, 8)
        layers += [nn.Linear(d, out), nn.ReLU()]
        d = out
    layers.append(nn.Linear(d, num_classes))
    return seeded_init(nn.Sequential(*layers), generator)


class _Conv1d(nn.Module):
    def __init__(self, in_features: int, num_classes: int, channels: int, kernel: int, hidden: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel, padding=pad), nn.ReLU(),
            nn.Conv1d(channels, 2 * channels, kernel, padding=pad), nn.ReLU(), nn.MaxPool1d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * (in_features // 2), hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.features(z.unsqueeze(1)))


@register_detector("cnn1d", "Two 1-D convolutions (32, 64 channels, kernel 3) over the feature vector, max-pool, "
                   "64 hidden units.", "Vinayakumar et al. 2017; Khamis & Matrawy 2020 (CNN)")
def cnn1d(in_features: int, num_classes: int, *, generator: torch.Generator, channels: int = 32, kernel: int = 3,
          hidden: int = 64) -> nn.Module:
    return seeded_init(_Conv1d(in_features, num_classes, channels, kernel, hidden), generator)


class _Recurrent(nn.Module):
    """Each feature is a step: its value times a learned vector plus an embedding of its position."""

    def __init__(self, in_features: int, num_classes: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.value = nn.Linear(1, embed)
        self.position = nn.Embedding(in_features, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        steps = self.value(z.unsqueeze(-1)) + self.position.weight
        _, last = self.gru(steps)
        return self.head(last[-1])


@register_detector("gru", "A GRU (64 units) over the features as a sequence, each step the value and its "
                   "position (16 dims).", "Xu et al. 2018; Khamis & Matrawy 2020 (RNN)")
def gru(in_features: int, num_classes: int, *, generator: torch.Generator, embed: int = 16,
        hidden: int = 64) -> nn.Module:
    return seeded_init(_Recurrent(in_features, num_classes, embed, hidden), generator)
