"""A small convolutional image classifier: the vision_tiny example (3x32x32 images, 4 classes).

Two conv/ReLU/pool stages, global average pooling (so any image size works) and a linear head;
about 6k parameters. It has a no-argument constructor and no ``build_model``, to show that the
loader finds the single ``nn.Module`` class defined in a file. ``forward(x)`` takes the images
positionally under any parameter name; the adapter passes ``pixel_values`` there.
"""

from __future__ import annotations

import torch
from torch import nn

TASK = "vision_tiny"


class SimpleCNN(nn.Module):
    """conv(3->16) -> pool -> conv(16->32) -> global mean -> linear(32->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
