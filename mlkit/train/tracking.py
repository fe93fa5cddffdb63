"""Rank-0 tracking for trainers: one run per launch, metrics in one call per log step.

`Tracker` wraps mlkit's fluent API so that only rank 0 ever touches the store. Inside `mlkit run`
(MLKIT_RUN_ID set) `start_run()` attaches to the supervisor's run, so a torchrun launch of N
processes is still one run. `MetricLogger` keeps the training loop free of host syncs: it takes
tensors every step, and calls `.item()` (a CPU-GPU sync) only every `interval` steps, when it also
writes one `log_metrics` call and a progress line.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch

import mlkit
from mlkit.train.flops import FlopCounter, peak_flops
from mlkit.train.runtime import Runtime


class Tracker:
    """The trainer's handle on its tracked run; every method is a no-op on ranks other than 0."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.run_id: str | None = None
        # a run continued in place (`mlkit run --run-id`, a requeued Slurm job) was stopped after
        # its last checkpoint: the steps re-run from there, up to this one, are logged already
        self.logged_through: int | None = None

    def start(self, params: dict) -> None:
        if not self.rt.is_main:
            return
        run = mlkit.start_run()  # attaches to the supervisor's run when MLKIT_RUN_ID is set
        self.run_id = run.info.run_id
        # `mlkit run` logged each -P value as typed (lr=1e-3); the parsed flag (0.001) is the same
        # value, which the store would refuse as a changed param: keep the user's spelling
        logged = run.data.params
        mlkit.log_params({k: _param(v) for k, v in params.items() if not _same(logged.get(k), v)})
        self.logged_through = _last_step(self.run_id)

    def log_params(self, params: dict) -> None:
        """Log params; on a continued run, those its first start logged keep that start's value."""
        if not self.rt.is_main:
            return
        run = mlkit.active_run()
        logged = run.data.params if run else {}
        continued = self.logged_through is not None
        mlkit.log_params(
            {
                k: _param(v)
                for k, v in params.items()
                if not (_same(logged.get(k), v) or (continued and k in logged))
            }
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics; a nan or inf (a diverged loss never comes back) is logged, then ends the
        run FAILED on every rank, rather than after hours of training on it."""
        if self.rt.is_main and (self.logged_through is None or step > self.logged_through):
            mlkit.log_metrics(metrics, step=step)
        if bad := [k for k, v in metrics.items() if not math.isfinite(v)]:
            raise FloatingPointError(
                f"{bad[0]} is {metrics[bad[0]]} at step {step}: training diverged; try a lower --lr "
                "(the last checkpoint, saved before, is kept)"
            )

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.rt.is_main:
            mlkit.log_text(text, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        if self.rt.is_main:
            mlkit.log_artifact(str(local_path), artifact_path)

    def log_model(self, model: torch.nn.Module, input_example=None, transform=None) -> None:
        """Log the final model (the raw module, not its DDP/compiled wrapper) as `model/`; with a
        transform (mlkit.models.transform), input_example is raw input as a client sends it."""
        if self.rt.is_main:
            # init_args is a plain attribute the model's __init__ sets (nn.Module's own __getattr__
            # would type it as a tensor or submodule).
            init_args = model.__dict__["init_args"]
            mlkit.log_model(
                model, "model", init_args=init_args, input_example=input_example, transform=transform
            )

    def artifact_dir(self) -> Path:
        # import budget: the store loads only when the artifact dir is asked for
        from mlkit.tracking.store import FileStore

        if self.run_id is None:
            raise RuntimeError("Tracker.artifact_dir() is called on the main rank after start()")
        return Path(FileStore().artifact_dir(self.run_id))

    def end(self, status: str = "FINISHED") -> None:
        """Close the run we created; a run the supervisor owns keeps its status (it sets it)."""
        if self.rt.is_main:
            mlkit.end_run(status)


def _param(value):
    # the store takes strings; None becomes "" so `-P resume=` and an absent resume log the same
    return "" if value is None else value


def _last_step(run_id: str) -> int | None:
    """The last step the run's trainer logged metrics for; None for a run without any (a fresh one).
    The supervisor's `system/*` metrics count ticks, not training steps: they are not looked at."""
    # import budget: the store loads only when a run starts
    from mlkit.tracking.store import FileStore

    store = FileStore()
    keys = [k for k in store.get_run(run_id).data.metrics if not k.startswith("system/")]
    return max((m.step for k in keys for m in store.get_metric_history(run_id, k)), default=None)


def _same(logged: str | None, value) -> bool:
    """Whether the param string already logged says `value` (1e-3 and 0.001 do; nan and nan do)."""
    if logged is None:
        return False
    if logged == str(_param(value)):
        return True
    try:
        a, b = float(logged), float(value)
    except (TypeError, ValueError):
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


class MetricLogger:
    """Buffer per-step tensors; every `interval` steps log them once, with throughput.

    `unit` names the throughput metric ("samples" -> samples_per_s, "tokens" -> tokens_per_s).
    `count` passed to `step()` is the number of samples (or tokens) the whole launch processed in
    that step, so the rate is the launch's, not one rank's.

    After `count_flops()`, the next step's model FLOPs are counted (once, mlkit.train.flops) and
    logged once as the metric `model_flops_per_step`; every log step then adds `flops_per_s` (the
    launch's model FLOP/s) and, on a device whose peak is known, `mfu`. The counted step itself,
    slowed by the counting, is left out of every throughput sample. It runs eagerly, also for a
    torch.compile'd model (which compiles on the next step); a torch older than 2.6, which cannot
    run one step eagerly, counts nothing once it has compiled something (FlopCounter.start).
    """

    def __init__(
        self, tracker: Tracker, interval: int, unit: str = "samples", total_steps: int | None = None
    ):
        self.tracker, self.rt = tracker, tracker.rt
        self.interval, self.unit, self.total_steps = max(1, interval), unit, total_steps
        # under `mlkit run` stderr is a pipe to the supervisor, which says when it ends on a terminal
        self.tty = sys.stderr.isatty() or os.environ.get("MLKIT_STDERR_TTY") == "1"
        self._count = 0
        self._steps = 0  # steps since the last log step
        self._t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self._counter: FlopCounter | None = None
        self.flops_per_step: int | None = None  # model FLOPs of one step of the whole launch
        self.peak: float | None = None  # the launch's peak FLOP/s, where the device is known

    def count_flops(self) -> None:
        """Count the model FLOPs of the next step (up to the next `step()` call), once."""
        counter = FlopCounter()
        self._counter = counter if counter.start() else None  # (no count: see FlopCounter.start)

    def step(self, step: int, count: int, **values) -> dict[str, float] | None:
        """Record one optimizer step; returns the logged values on a log step, else None."""
        if self._counter is not None:
            self._flops_counted(self._counter.stop(), step)
            self._counter = None
            # the counted step ran under the counter, slower: the next throughput sample starts after it
            self._count, self._steps, self._t0 = 0, 0, time.perf_counter()
        else:
            self._count += count
            self._steps += 1
        if step % self.interval != 0:
            return None
        # .item() syncs with the GPU; here only, once per interval. All ranks reduce together.
        logged = {
            k: float(self.rt.all_reduce_mean(v).item()) if torch.is_tensor(v) else float(v)
            for k, v in values.items()
        }
        now = time.perf_counter()
        elapsed = max(now - self._t0, 1e-9)
        if self._steps:  # (none on the counted step itself, when it is a log step)
            logged[f"{self.unit}_per_s"] = self._count / elapsed
            if self.flops_per_step is not None:
                logged["flops_per_s"] = self.flops_per_step * self._steps / elapsed
                if self.peak:
                    logged["mfu"] = logged["flops_per_s"] / self.peak
        self._count, self._steps, self._t0 = 0, 0, now
        self.tracker.log_metrics(logged, step)
        self.last = logged
        self.progress(step, logged)
        return logged

    def restart_clock(self) -> None:
        """Drop the time spent in evaluation/checkpointing from the next throughput sample."""
        self._count, self._steps, self._t0 = 0, 0, time.perf_counter()

    def _flops_counted(self, rank_flops: int, step: int) -> None:
        # every rank runs the same step on its share of the batch: the launch does world_size times it
        self.flops_per_step = rank_flops * self.rt.world_size
        peak = peak_flops(self.rt.device, self.rt.precision)
        self.peak = peak * self.rt.world_size if peak else None
        # a metric, not a param: a resumed run on other GPUs may count another number
        counted = {"model_flops_per_step": float(self.flops_per_step)}
        if self.peak:
            counted["peak_flops"] = self.peak
        self.tracker.log_metrics(counted, step)

    def progress(self, step: int, values: dict[str, float], end: str = "") -> None:
        """A status line: rewritten in place on a terminal, one plain line per call otherwise."""
        if not self.rt.is_main:
            return
        total = f"/{self.total_steps}" if self.total_steps else ""
        text = f"step {step}{total}: " + " ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        if self.tty:
            sys.stderr.write("\r\033[K" + text + end)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def print(self, text: str) -> None:
        """A permanent line (epoch summaries), which on a terminal first ends the status line."""
        if self.rt.is_main:
            sys.stderr.write(("\r\033[K" if self.tty else "") + text + "\n")
            sys.stderr.flush()


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
