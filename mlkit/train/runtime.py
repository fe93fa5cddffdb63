"""Device, precision and DDP setup that every trainer in projects/ repeats.

One call, `setup(device=..., precision=..., seed=...)`, returns a `Runtime` that says where to put
tensors, how to autocast, whether a GradScaler is needed and which rank this process is. A process
started by torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) joins the process group here: nccl on CUDA,
gloo on CPU. A plain `python train.py` is a world of one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class Runtime:
    device: torch.device
    precision: str  # the resolved one: bf16, fp16 or fp32
    rank: int = 0  # global rank (0 when not distributed)
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and talks to the tracking store; the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    def autocast(self):
        """Autocast around forward + loss only; the backward runs outside, as the AMP docs say."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling (its exponent is 5 bits); bf16 and fp32 get a disabled scaler."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def fused(self) -> bool:
        """Fused AdamW/SGD kernels exist for CUDA tensors; on CPU the foreach path is the fast one."""
        return self.device.type == "cuda"

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor over ranks (a no-op for one process). Every rank must call it."""
        if self.distributed:
            t = t.detach().clone()
            dist.all_reduce(t, op=dist.ReduceOp.AVG)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def positive(text: str) -> int:
    """argparse type of a count that must be at least 1 (epochs, steps, batch size): 0 or -1
    would train nothing and still end FINISHED, logging an untrained model."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return n


def fraction(text: str) -> float:
    """argparse type of a held-out share: at least 0, below 1 (1 leaves nothing to train on, and a
    negative one silently swaps the roles of the splits)."""
    x = float(text)
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return x


def add_system_args(p: argparse.ArgumentParser, *, seeds: str, dry_run: str) -> None:
    """The flags every trainer has that are not hyperparameters: device, precision, seed, resume...
    Also turns off abbreviations: an undeclared `-P widt=4` reaches the trainer as `--widt 4`,
    which must be an error, not a silent `--width 4`."""
    p.allow_abbrev = False
    a = p.add_argument
    a(
        "--device",
        default="auto",
        help="auto (the GPU mlkit assigned, else CPU) | cpu | cuda[:N] (default: auto)",
    )
    a(
        "--precision",
        default="auto",
        help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32 (default: auto)",
    )
    a("--compile", type=int, default=0, help="1 = torch.compile the model(s) (slow first step) (default: 0)")
    a("--seed", type=int, default=0, help=f"seeds {seeds} (default: 0)")
    a("--log-interval", type=int, default=10, help="log losses/lr/throughput every N steps (default: 10)")
    a("--resume", default="", help="run id whose checkpoints/last.pt to continue (default: none)")
    a("--dry-run", action="store_true", help=f"{dry_run}, to check the wiring")


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on a GPU that has it, else fp32 (CPU bf16 autocast is slower on most CPUs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device (GradScaler); use bf16 or fp32 on CPU")
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too


def setup(device: str = "auto", precision: str = "auto", seed: int = 0) -> Runtime:
    """Pick the device, join the process group if torchrun started us, seed, and turn on TF32.

    `device` is "auto" (CUDA if mlkit gave us a GPU through CUDA_VISIBLE_DEVICES, else CPU),
    "cpu", "cuda" or "cuda:N". Under torchrun every rank uses cuda:LOCAL_RANK.
    """
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"--device {device}: no CUDA device is visible to this process (a CPU-only torch, no "
            "GPU, or `mlkit run --gpus none`); use --device auto or cpu, or ask for a GPU (--gpus 1)"
        )
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if "RANK" in os.environ else (dev.index or 0))
        torch.cuda.set_device(dev)
        # TF32 for fp32 matmuls; the one call that agrees with both the legacy and new flags
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv
    if "RANK" in os.environ and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            dist.init_process_group(backend=backend, device_id=dev)
        else:
            dist.init_process_group(backend=backend)
    seed_everything(seed + rank)  # different dropout/noise per rank, same init via DDP's broadcast
    return Runtime(dev, resolve_precision(precision, dev), rank, local_rank, world_size)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """DDP-wrap for a multi-process launch; the model itself otherwise."""
    if not rt.distributed:
        return model

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
