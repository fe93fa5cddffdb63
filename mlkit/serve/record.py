"""The serving record: a server is a run in the store, so `mlkit runs list` and `mlkit report` show it.

Tags: `mlkit.kind=serving` and the ownership tags (host, pid, its start time), so a server that
dies without ending its run is marked FAILED/lost by the next mlkit command. Params: the model
URI, the version it resolved to, the model's own run, the address and the batching settings.
Every `interval` seconds (60 by default): `serve_requests`, `serve_errors`,
`serve_latency_p50_ms`, `serve_latency_p99_ms` over that interval, `serve_model_version`, and
`serve_gpu_memory_bytes` on a GPU. The run ends FINISHED when the server drains, FAILED when it
could not start (its model failed to load or warm up); an address it cannot listen on is refused
before the run exists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlkit.tracking.layout import DEFAULT_EXPERIMENT_ID
from mlkit.tracking.lost import ownership_tags
from mlkit.tracking.store import FileStore

KIND_TAG = "mlkit.kind"
SERVING = "serving"
PARENT_TAG = "mlflow.parentRunId"


class ServingRecord:
    """The run of one server process (or of one worker, under the parent server's run)."""

    def __init__(
        self,
        root: Path | None,
        *,
        run_name: str,
        experiment: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.store = FileStore(root)
        experiment_id = (
            self.store.get_or_create_experiment(experiment) if experiment else DEFAULT_EXPERIMENT_ID
        )
        all_tags = {KIND_TAG: SERVING, **ownership_tags(), **(tags or {})}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        self.run_id = self.store.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.step = 0

    def log_params(self, params: dict[str, Any]) -> None:
        self.store.log_params(self.run_id, {k: v for k, v in params.items() if v is not None})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self.store.set_tags(self.run_id, tags)

    def flush(self, sample: Callable[[], dict[str, float]]) -> None:
        """Log one set of `serve_*` metrics."""
        values = {f"serve_{k}": v for k, v in sample().items() if v is not None}
        if values:
            self.store.log_metrics(self.run_id, values, step=self.step)
            self.step += 1

    def start_flushing(self, sample: Callable[[], dict[str, float]], interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.flush(sample)

        self._thread = threading.Thread(target=loop, name="mlkit-serve-record", daemon=True)
        self._thread.start()

    def end(self, status: str, sample: Callable[[], dict[str, float]] | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if sample is not None:
            self.flush(sample)
        self.store.set_terminated(self.run_id, status)
        self.store.close_run_files(self.run_id)
