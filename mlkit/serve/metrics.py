"""The server's numbers: Prometheus metrics for /metrics (prometheus-client, a private registry)
and the window of latencies the serving record flushes to the store each interval."""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Counters, histograms and gauges of one server process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlkit_serve_requests", "Scoring requests answered, by HTTP status", ["code"], registry=r
        )
        self.errors = Counter("mlkit_serve_errors", "Scoring requests answered with an error", registry=r)
        self.latency = Histogram(
            "mlkit_serve_request_seconds",
            "Time to answer a scoring request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mlkit_serve_batch_size", "Rows per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("mlkit_serve_queue_depth", "Requests waiting for a batch", registry=r)
        self.version = Gauge("mlkit_serve_model_version", "The registry version being served", registry=r)
        self.swaps = Counter("mlkit_serve_swaps", "Model versions swapped in", registry=r)
        self.reload_failures = Counter(
            "mlkit_serve_reload_failures", "New versions that failed to load or warm up", registry=r
        )
        self.gpu_memory = Gauge(
            "mlkit_serve_gpu_memory_bytes", "GPU memory allocated by the model", registry=r
        )
        self._lock = threading.Lock()
        self._window: list[float] = []
        self._window_errors = 0

    def observe(self, seconds: float, status: int) -> None:
        self.requests.labels(code=str(status)).inc()
        self.latency.observe(seconds)
        error = status >= 400
        if error:
            self.errors.inc()
        with self._lock:
            self._window.append(seconds)
            self._window_errors += error

    def take_window(self) -> dict[str, float]:
        """Requests, errors and p50/p99 latency (ms) since the last call, for the serving record."""
        with self._lock:
            window, errors = sorted(self._window), self._window_errors
            self._window, self._window_errors = [], 0
        out: dict[str, float] = {"requests": float(len(window)), "errors": float(errors)}
        if window:
            out["latency_p50_ms"] = 1000 * _quantile(window, 0.50)
            out["latency_p99_ms"] = 1000 * _quantile(window, 0.99)
        return out

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def _quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of a sorted list."""
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))
    return ordered[index]


def gpu_memory(device: str) -> Any:
    """Bytes the model's CUDA allocator holds, or None on the CPU."""
    if not device.startswith("cuda"):
        return None
    # import budget: torch is loaded already (a model is)
    import torch

    return int(torch.cuda.memory_allocated(torch.device(device)))
