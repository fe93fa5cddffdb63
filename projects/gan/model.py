"""DCGAN generator and discriminator for square images of 8, 16, 32 or 64 pixels.
Importing this file has no side effects."""

import math

import torch
import torch.nn as nn


def num_upsamplings(image_size: int) -> int:
    n = int(math.log2(image_size // 4))
    if image_size < 8 or 4 * 2**n != image_size:
        raise ValueError(f"image_size must be 4 * 2**k >= 8 (8, 16, 32, 64...), got {image_size}")
    return n


def init_weights(m: nn.Module) -> None:
    # the DCGAN paper's init: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, nz, 1, 1) -> images (B, channels, S, S) in [-1, 1]; each stage doubles the size."""

    def __init__(self, nz: int = 64, ngf: int = 32, channels: int = 1, image_size: int = 16):
        super().__init__()
        self.init_args = dict(nz=nz, ngf=ngf, channels=channels, image_size=image_size)
        n = num_upsamplings(image_size)
        c = ngf * 2 ** (n - 1)
        layers = [
            nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
        ]  # (B, c, 4, 4)
        for _ in range(n - 1):  # (B, c, s, s) -> (B, c/2, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(True),
            ]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, channels, S, S)
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """images (B, channels, S, S) -> (B,) real/fake logits; each stage halves the size."""

    def __init__(self, ndf: int = 32, channels: int = 1, image_size: int = 16):
        super().__init__()
        self.init_args = dict(ndf=ndf, channels=channels, image_size=image_size)
        n = num_upsamplings(image_size)
        c = ndf
        layers = [
            nn.Conv2d(channels, c, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]  # (B, ndf, S/2, S/2); no BN on input
        for _ in range(n - 1):  # (B, c, s, s) -> (B, 2c, s/2, s/2)
            layers += [
                nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                nn.BatchNorm2d(2 * c),
                nn.LeakyReLU(0.2, True),
            ]
            c *= 2
        layers += [nn.Conv2d(c, 1, 4, 1, 0), nn.Flatten(0)]  # (B, c, 4, 4) -> (B,)
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
