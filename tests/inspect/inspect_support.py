"""Builders the inspect tests share (gc, compare, report): real stores, real PNGs."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from mlkit.tracking.store import FileStore

XSS_NAME = "<script>document.body.setAttribute('data-pwned','name')</script>"
XSS_PARAM = "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','param')\">"
T0 = 1_700_000_000_000  # a fixed epoch-ms origin for run times


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """A real RGB PNG (a colour pattern), written with zlib only."""
    raw = b"".join(
        b"\x00"
        + b"".join(
            bytes(((x * 9 + seed * 70) % 256, (y * 7) % 256, ((x ^ y) * 5) % 256)) for x in range(width)
        )
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of raw pixel bytes) of an 8-bit RGB/RGBA PNG, unfiltered, zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        prev = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, bpp)
        rows.append(bytes(prev))
    return width, height, rows


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    """Undo one PNG row filter (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    if kind == 0:
        return line
    if kind == 2:
        return bytearray((x + b) & 255 for x, b in zip(line, prev, strict=True))
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + prev[i]) // 2) & 255
        else:
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return line


@dataclass
class SweepStore:
    """Three finished runs of one experiment with params, curves, system metrics and a PNG each."""

    store: FileStore
    experiment_id: str
    run_ids: list[str]  # in the order created: lr 0.1, 0.01 (the XSS-named run), 0.001


def build_sweep(root: Path, tmp: Path, *, name: str = "cnn-sweep") -> SweepStore:
    store = FileStore(root)
    exp = store.create_experiment(name)
    run_ids = []
    for i, lr in enumerate([0.1, 0.01, 0.001]):
        run_name = XSS_NAME if i == 1 else f"lr-{lr}"
        run = store.create_run(exp, run_name=run_name, start_time=T0 + i * 1000)
        rid = run.info.run_id
        params = {
            "lr": lr,
            "batch_size": 64,
            "epochs": [20, 100, 5][i],
            "optimizer": XSS_PARAM if i == 1 else "adam",
        }
        store.log_params(rid, params)
        for step in range(20):
            ts = T0 + step * 1000
            store.log_metric(rid, "train_loss", 2.0 * math.exp(-step * (i + 1) / 8), step=step, timestamp=ts)
            store.log_metric(rid, "val_acc", 0.5 + 0.1 * i + 0.02 * step, step=step, timestamp=ts)
            store.log_metric(
                rid,
                "system/cpu_utilization_percentage",
                40 + 10 * math.sin(step / 3 + i),
                step=step,
                timestamp=ts,
            )
        image = tmp / f"grid-{i}.png"
        image.write_bytes(make_png(24, 24, seed=i))
        store.log_artifact(rid, image, "samples")
        store.set_terminated(rid, "FINISHED", end_time=T0 + 60_000 + i * 1000)
        run_ids.append(rid)
    return SweepStore(store, exp, run_ids)
