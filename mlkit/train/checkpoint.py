"""Checkpoints in the run's artifacts, and finding an earlier run's checkpoint to resume from.

A checkpoint is a dict of state dicts and plain values only (model, optimizer, step, epoch, args),
so it loads with `torch.load(weights_only=True)`: no pickled classes, nothing to execute.
It is written next to its final name and renamed into place, so an interrupted save never leaves
a half-written `last.pt` behind.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import torch

from mlkit import fsio
from mlkit.errors import InvalidInputError, NotFoundError, StoreError

CHECKPOINT = "checkpoints/last.pt"  # relative to the run's artifact directory
# Set by mlkit on a requeued Slurm job's next start: the run to continue is the job's own run.
RESUME_ENV = "MLKIT_RESUME_RUN_ID"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write `state` to `path`; weights with a nan or inf are refused, keeping the last good one."""
    path = Path(path)
    if bad := _non_finite(state):
        raise FloatingPointError(f"{bad} has nan or inf values: training diverged; {path} is left as it was")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fsio.atomic_write(path, buffer.getbuffer())  # a full disk is said plainly; no .tmp is left
    return path


def _non_finite(state, key: str = "checkpoint") -> str | None:
    """The key path of the first float tensor in `state` with a nan or inf, else None."""
    if isinstance(state, dict):
        items = list(state.items())
    elif isinstance(state, (list, tuple)):
        items = list(enumerate(state))
    else:
        floating = torch.is_tensor(state) and state.is_floating_point()
        return key if floating and not torch.isfinite(state).all() else None
    return next((bad for k, v in items if (bad := _non_finite(v, f"{key}[{k!r}]"))), None)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as exc:  # empty, truncated, not a checkpoint
        why = " ".join([type(exc).__name__, *str(exc).splitlines()[:1]])[:160]
        fix = "resume from another run, or move the file away to start this run over"
        raise StoreError(f"{path}: the checkpoint cannot be read ({why}); {fix}", hint=fix) from exc


def find_checkpoint(run_id: str) -> Path:
    """The `checkpoints/last.pt` of run `run_id` in the current store (for `-P resume=<run-id>`)."""
    # import budget: the tracking client loads only when resuming from a run
    from mlkit.tracking.client import MlkitClient
    from mlkit.tracking.store import FileStore

    MlkitClient().get_run(run_id)  # raises NotFoundError naming the run if it is not in this store
    path = Path(FileStore().artifact_dir(run_id)) / CHECKPOINT
    if not path.is_file():
        raise NotFoundError(
            f"run {run_id} has no {CHECKPOINT} artifact to resume from",
            hint="resume from a run of this trainer that saved a checkpoint (each epoch / eval does)",
        )
    return path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers (what we save and log)."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def resume_state(resume: str, flags: dict | None = None) -> dict | None:
    """The checkpoint a trainer continues from: its own run's last checkpoint, when the run it
    logs to was started before and saved one (a preempted Slurm job's requeued start,
    $MLKIT_RESUME_RUN_ID; or `mlkit run --run-id RUN` of a killed run, $MLKIT_RUN_ID) -- its own
    progress comes first, even when it was started with `-P resume=OTHER`, which its argv repeats
    on every restart; else `-P resume=RUN`'s (which must exist); else None (a fresh start).
    `flags` (the trainer's vars(args)): a checkpoint whose flags are not all this trainer's was
    written by another trainer, and is refused; so is one that already reached --epochs or
    --max-steps (nothing would train)."""
    own = os.environ.get(RESUME_ENV) or os.environ.get("MLKIT_RUN_ID", "")
    if own:
        # import budget: the store loads only under `mlkit run` (or a requeued job)
        from mlkit.tracking.store import FileStore

        path = Path(FileStore().artifact_dir(own)) / CHECKPOINT
        if path.is_file():
            state = load_checkpoint(path)
            if int(os.environ.get("RANK", 0)) == 0:
                print(f"continuing run {own} from its checkpoint at step {state['step']}", file=sys.stderr)
            return state
    if not resume:
        return None
    state = load_checkpoint(find_checkpoint(resume))
    if flags is not None and (foreign := sorted(set(state.get("args", {})) - set(flags))):
        raise InvalidInputError(
            f"run {resume}'s checkpoint was written by another trainer (its flags "
            f"{', '.join('--' + f.replace('_', '-') for f in foreign[:4])} are not this one's); "
            "resume from a run of this project"
        )
    for total, at in (("epochs", "epoch"), ("max_steps", "step")):  # the totals, counted from the start
        if (
            flags is not None
            and not flags.get("dry_run")
            and total in flags
            and state.get(at, 0) >= flags[total]
        ):
            flag = "--" + total.replace("_", "-")
            raise InvalidInputError(
                f"run {resume}'s checkpoint is at {at} {state[at]}, which {flag} {flags[total]} already "
                f"reaches: nothing would train; pass a larger {flag} (the total, not how many more)"
            )
    return state
