"""The CNN: three conv stages and a global average pool, so one network fits any image size
(8x8 digits, 32x32 CIFAR-shaped synthetic data). Importing this file has no side effects."""

import torch
import torch.nn as nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # no conv bias: BatchNorm's shift does that job
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Net(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.init_args = dict(in_channels=in_channels, num_classes=num_classes, width=width, dropout=dropout)
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w),
            conv_bn(w, w),
            nn.MaxPool2d(2),  # (B, w, S/2, S/2)
            conv_bn(w, 2 * w),
            conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, S/4, S/4)
            conv_bn(2 * w, 4 * w),  # (B, 4w, S/4, S/4)
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, 4w): size-independent from here on
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) images in [-1, 1] -> (B, num_classes) logits."""
        return self.head(self.features(x))
