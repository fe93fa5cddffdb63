"""A PNG writer with no Pillow: zlib + struct, 8-bit grey or RGB. Enough for sample grids."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    # length, type, data, CRC over type+data (PNG spec section 5.3)
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) RGB -> PNG bytes."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        color_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
    h, w = pixels.shape[:2]
    # each scanline starts with filter type 0 (None)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * channels)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    path = Path(path)
    path.write_bytes(encode_png(pixels))
    return path


def image_grid(images: np.ndarray, nrow: int = 8, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> one uint8 (H', W') or (H', W', 3) grid image.

    `scale` repeats pixels so an 8x8 digit is visible at a glance.
    """
    images = np.asarray(images, dtype=np.float32)
    n, c, h, w = images.shape
    images = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    if scale > 1:
        images = images.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = np.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), 128, np.uint8)  # grey gutters
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid[0] if c == 1 else grid[:3].transpose(1, 2, 0)


def read_png(path: str | Path) -> np.ndarray:
    """Decode a PNG that `write_png` wrote (8-bit, filter 0 on every line): for tests and checks."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    w, h, _, color_type = header[:4]
    channels = 3 if color_type == 2 else 1
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    pixels = raw[:, 1:].reshape(h, w, channels)
    return pixels[:, :, 0] if channels == 1 else pixels
