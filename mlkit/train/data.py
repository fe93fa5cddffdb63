"""Image datasets for the CNN and GAN trainers, loaded whole into one tensor (no DataLoader).

`-P data=...` picks the source:
  digits          scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)
  synthetic       random class-dependent images of any shape, made on the target device
  /path/x.npz     arrays `x` (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 0..255 or floats 0..1,
                  and `y` (N,) integer labels
  /path/folder/   one sub-folder per class of image files (needs Pillow; the error says so)
Every source comes back as floats in [-1, 1], shape (N, C, S, S), so a GAN's tanh output and a
classifier's input share one convention. Small sets live on the GPU and batches are index
lookups, which is what makes these trainers faster than a DataLoader loop. `random_shift` is the
translation augmentation, also on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    x_train: torch.Tensor  # (N, C, S, S) float in [-1, 1]
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    source: str  # "digits", "synthetic", or the path

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return c, h, w


def load_images(
    data: str,
    *,
    image_size: int = 0,
    channels: int = 1,
    num_classes: int = 10,
    synthetic_size: int = 10_000,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ImageData:
    """Load, scale to [-1, 1], resize to image_size (0 keeps the native size), split, move."""
    if data == "synthetic":
        x, y = synthetic_images(synthetic_size, channels, image_size or 32, num_classes, seed, device)
    else:
        if data == "digits":
            x, y = digits()
        elif Path(data).suffix == ".npz":
            x, y = load_npz(Path(data))
        elif Path(data).is_dir():
            x, y = load_folder(Path(data), channels)
        else:
            raise FileNotFoundError(
                f"data={data!r}: expected 'digits', 'synthetic', a .npz file or a folder of class folders"
            )
        if image_size and x.shape[-1] != image_size:
            # bilinear: digits are 4x4-block counts, so smooth upsampling keeps strokes readable
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    num_classes = int(y.max()) + 1 if data != "synthetic" else num_classes
    train_idx, val_idx = stratified_split(y, val_fraction, seed)
    x, y = x.to(device), y.to(device)
    return ImageData(x[train_idx], y[train_idx], x[val_idx], y[val_idx], num_classes, data)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # bundled in the wheel: no download

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8 - 1  # pixels 0..16 -> [-1, 1]
    return x, torch.tensor(d.target, dtype=torch.int64)


def load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as f:
        if "x" not in f or "y" not in f:
            raise KeyError(f"{path}: expected arrays 'x' and 'y', found {sorted(f.files)}")
        x, y = f["x"], f["y"]
    if x.ndim == 3:  # (N, H, W) grey
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(
            f"{path}: x must be (N,H,W), (N,H,W,C) or (N,C,H,W) with len(y) == N; "
            f"got x {x.shape}, y {y.shape}"
        )
    integer = np.issubdtype(x.dtype, np.integer)
    x = torch.from_numpy(np.ascontiguousarray(x)).float()
    if integer or x.max() > 1.0:  # 0..255 pixels; floats are taken to be in 0..1
        x = x / 255
    return x * 2 - 1, torch.from_numpy(np.asarray(y)).long()


def load_folder(root: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """root/<class>/<image>: classes are the sorted sub-folder names; all images resized to the first's size."""
    try:
        # import budget: PIL loads only for an image-folder dataset
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            f"data={root}: reading a folder of images needs Pillow (pip install pillow); "
            "or save your images as an .npz with arrays x (N,H,W[,C]) and y (N,)"
        ) from e
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"data={root}: no class sub-folders (expected {root}/<class>/<image>.png)")
    images, labels, size = [], [], None
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            im = Image.open(f).convert("L" if channels == 1 else "RGB")
            size = size or im.size
            arr = np.asarray(im.resize(size), dtype=np.uint8)
            images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"data={root}: no images with suffixes {sorted(IMAGE_SUFFIXES)}")
    x = torch.from_numpy(np.stack(images)).float() / 127.5 - 1
    return x, torch.tensor(labels, dtype=torch.int64)


def synthetic_images(n: int, channels: int, size: int, num_classes: int, seed: int, device) -> tuple:
    """Class prototypes plus noise: learnable (so smoke tests can see loss fall), any shape,
    generated on the device so a 50k x 3x32x32 benchmark set costs no host-to-device copy."""
    g = torch.Generator(device=device).manual_seed(seed)
    protos = torch.rand(num_classes, channels, size, size, generator=g, device=device) * 2 - 1
    y = torch.randint(0, num_classes, (n,), generator=g, device=device)
    noise = torch.randn(n, channels, size, size, generator=g, device=device)
    return (protos[y] + 0.5 * noise).clamp_(-1, 1), y


def stratified_split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-seed split that keeps every class's share the same in train and validation."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    train, val = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def held_out_tail(data: torch.Tensor, val_fraction: float, min_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val): `data` cut before its last `val_fraction`; each part must hold `min_len`."""
    n_val = int(len(data) * val_fraction)
    if min(n_val, len(data) - n_val) < min_len:
        raise ValueError(
            f"--val-fraction {val_fraction} holds out {n_val} bytes of {len(data)}: each split needs at least "
            f"{min_len} (--seq-len + 2); pass a --val-fraction that leaves both that long"
        )
    return data[: len(data) - n_val], data[len(data) - n_val :]


def full_batches(n: int, batch_size: int) -> int:
    """Steps in an epoch of `n` images (epoch_batches drops the last partial batch); a batch
    larger than the data is an error, not an epoch of no steps."""
    if batch_size > n:
        raise ValueError(
            f"--batch-size {batch_size} is more than the {n} training images: no step would run; "
            f"pass a --batch-size of at most {n}"
        )
    return n // batch_size


def epoch_batches(
    n: int, batch_size: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1, device="cpu"
):
    """Yield index tensors for one epoch: the same shuffled order on every rank (seeded by
    seed+epoch), each rank taking every world_size-th index; full batches only (fixed shapes
    for cuDNN benchmark and torch.compile)."""
    g = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g, device=device)[rank::world_size]
    for i in range(len(perm) // batch_size):
        yield perm[i * batch_size : (i + 1) * batch_size]


def random_shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Translate each image by its own random offset in [-pixels, pixels], on the device.
    The border is filled with -1 (background), as a digit slid across the page would be.
    Shared by the CNN trainer and the GAN's sample check, which trains the same classifier."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pixels,) * 4, value=-1.0)  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pixels + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pixels + 1, (B, 1, 1), device=x.device)
    rows = torch.arange(H, device=x.device).view(1, H, 1) + dy  # (B, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W) + dx  # (B, 1, W)
    b = torch.arange(B, device=x.device).view(B, 1, 1)
    return xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
