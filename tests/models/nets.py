"""Small CNN-, RNN- and GAN-generator-like modules for the model round-trip tests.

Each keeps its constructor arguments in `self.init_args`, as the trainers in projects/ do.
Loaded by the tests from its file path, so a fresh interpreter could not import it by name and
log_model must copy it into the model's code/ directory.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 10, width: int = 8):
        super().__init__()
        self.init_args = {"channels": channels, "classes": classes, "width": width}
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, width, H/2, W/2)
            nn.Dropout(0.25),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # global average pool: (B, width)
        return self.head(x)


class CharRNN(nn.Module):
    def __init__(self, vocab: int = 20, hidden: int = 16, cell: str = "lstm", layers: int = 1):
        super().__init__()
        self.init_args = {"vocab": vocab, "hidden": hidden, "cell": cell, "layers": layers}
        self.embed = nn.Embedding(vocab, hidden)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor):
        y, state = self.rnn(self.embed(tokens))  # y: (B, T, hidden)
        return self.out(y), state


class Generator(nn.Module):
    def __init__(self, nz: int = 8, ngf: int = 4, channels: int = 1):
        super().__init__()
        self.init_args = {"nz": nz, "ngf": ngf, "channels": channels}
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),  # (B, ngf*2, 4, 4)
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, channels, 4, 2, 1, bias=False),  # (B, channels, 8, 8)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
