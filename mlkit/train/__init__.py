"""What the three trainers in projects/ share: device/precision/DDP setup, rank-0 tracking with a
low-overhead metric logger, checkpoints and resume, in-memory image data, and a PNG writer.

Imports torch, so only trainers import it; `import mlkit` never does.
"""

from mlkit.train.checkpoint import (
    CHECKPOINT,
    find_checkpoint,
    load_checkpoint,
    resume_state,
    save_checkpoint,
    unwrap,
)
from mlkit.train.runtime import Runtime, add_system_args, fraction, positive, setup, teardown, wrap_ddp
from mlkit.train.tracking import MetricLogger, Tracker

__all__ = [
    "CHECKPOINT",
    "MetricLogger",
    "Runtime",
    "Tracker",
    "add_system_args",
    "find_checkpoint",
    "fraction",
    "load_checkpoint",
    "positive",
    "resume_state",
    "save_checkpoint",
    "setup",
    "teardown",
    "unwrap",
    "wrap_ddp",
]
