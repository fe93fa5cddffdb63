"""Tiny models for the serving tests, loaded from this file's path (so log_model copies it into
the model's code/ directory and the server process imports it from there)."""

from __future__ import annotations

import time

import torch
from torch import nn


class FirstPixel(nn.Module):
    """Class k where the first (transformed) pixel is nearest k/8 - 1: with the digits transform
    (x/8 - 1) the predicted class is the first raw pixel value, so every answer names its row."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.init_args = {"classes": classes}
        self.centers = nn.Parameter(torch.arange(classes, dtype=torch.float32) / 8 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, :1]  # (B, 1)
        return -((first - self.centers) ** 2)  # (B, classes) logits


class Sleepy(FirstPixel):
    """FirstPixel that takes `seconds` per forward pass (for the request-timeout test)."""

    def __init__(self, classes: int = 10, seconds: float = 0.0):
        super().__init__(classes)
        self.init_args = {"classes": classes, "seconds": seconds}
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return super().forward(x)
