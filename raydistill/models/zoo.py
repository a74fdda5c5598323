"""Small models that ship with raydistill, for the bundled data and for tests.

Each factory takes ``num_classes`` and returns logits of shape [N, num_classes].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A compact CNN for small grayscale images [N, C, H, W] (8x8 digits, 28x28 Fashion-MNIST).

    ``features`` -> ``pool`` -> ``head``; tap ``features.3`` (first block) or ``features.7``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs [N, *] -> [N, num_classes].

    Hidden layers are ``layers.0``, ``layers.2``, ...; the output layer is ``head``.
    """

    def __init__(
        self, num_classes: int = 10, in_features: int = 64, hidden: Sequence[int] = (32,)
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.flatten(x)))


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> DigitsCNN:
    return DigitsCNN(num_classes=num_classes, in_channels=in_channels, width=width)


def mlp(num_classes: int = 10, in_features: int = 64, hidden: Sequence[int] = (32,)) -> MLP:
    return MLP(num_classes=num_classes, in_features=in_features, hidden=hidden)
