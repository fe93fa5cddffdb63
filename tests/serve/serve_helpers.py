"""Helpers for the serving tests: a real `mlkit models serve` process on a free loopback port,
models logged into a real store, and a plain HTTP client (http.client)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlkit.proc import mlkit_argv

HERE = Path(__file__).resolve().parent
DIGIT_ROW = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
             0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]  # fmt: skip


def need(condition: bool, why: str) -> None:
    """Skip for a missing tool here; in CI a missing tool is a failure."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have this: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def row(first: int) -> list[float]:
    """A 64-value raw digits row whose first pixel is `first` (FirstPixel predicts it)."""
    return [float(first), *map(float, DIGIT_ROW[1:])]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", path: str = "/", body: bytes | str | None = None,
         content_type: str | None = "application/json", headers: dict[str, str] | None = None,
         timeout: float = 30) -> Answer:  # fmt: skip
    """One HTTP request with http.client (a new connection each time)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        sent = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=sent)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def invoke(url: str, payload: Any, **kw: Any) -> Answer:
    return call(url, "POST", "/invocations", json.dumps(payload), **kw)


class Server:
    """A real `mlkit models serve` process; `url` once it answers."""

    def __init__(
        self,
        uri: str,
        *args: str,
        env: dict[str, str] | None = None,
        wait: float = 90,
        cwd: Path | None = None,
    ) -> None:
        # in `cwd`: started as the `mlkit` console script starts it, without the working directory on sys.path
        start = [sys.executable, "-m", "mlkit"] if cwd is None else mlkit_argv(sys.executable)
        argv = [*start, "models", "serve", uri, "--port", "0", "--json", *args]
        if "--gpus" not in args:
            argv += ["--gpus", "none"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd
        )
        self.info = self._ready(wait)
        self.url = self.info["url"]
        self._stderr = b""

    def _ready(self, wait: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + wait
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        if not line.endswith(b"\n"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"server did not start: {err.decode(errors='replace')[-2000:]}")
        return json.loads(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self._stderr = err
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")


def load_servenets() -> ModuleType:
    name = "mlkit_serve_nets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "servenets.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def digits_transform(labels: list[int] | None = None) -> Any:
    from mlkit.models.transform import Transform

    return Transform.image_classifier(
        scale=1 / 8, offset=-1, shape=(1, 8, 8), labels=labels or list(range(10))
    )


def log_first_pixel(
    name: str | None, *, shift: int = 0, cls: str = "FirstPixel", example: bool = True, **init: Any
) -> Any:
    """Log a FirstPixel-style model (labels shifted by `shift`: version k answers (first + shift) % 10)
    in a new run and register it as the next version of `name`; returns the ModelInfo."""
    import mlkit

    nets = load_servenets()
    model = getattr(nets, cls)(**init)
    labels = [(k + shift) % 10 for k in range(10)]
    with mlkit.start_run():
        return mlkit.log_model(
            model,
            "model",
            input_example=[row(1), row(2)] if example else None,
            transform=digits_transform(labels),
            registered_model_name=name,
        )
