"""Fixtures for the serving tests (the helpers are in serve_helpers.py)."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from serve.serve_helpers import Server


@pytest.fixture
def serve_cli():
    """Start servers; every one still running is stopped at the end of the test."""
    started: list[Server] = []

    def start(uri: str, *args: str, **kw: Any) -> Server:
        server = Server(uri, *args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=10)


@pytest.fixture
def torch_ok() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("uvicorn")


@pytest.fixture
def registry(store_root):
    from mlkit.tracking.registry import RegistryStore

    return RegistryStore(store_root)
