"""The Starlette app: MLflow's scoring endpoints plus /v1/model and /metrics.

    GET  /ping, /health   200 once a model is loaded (503 while a version is swapped in with
                          unload-then-load); never need the token
    GET  /version         mlkit's version
    POST /invocations     MLflow's payloads -> {"predictions": ...}; errors as MLflow's JSON
    GET  /v1/model        name, alias, version, run id, loaded at
    GET  /metrics         Prometheus text

With a token, every endpoint but /ping and /health needs `Authorization: Bearer <token>` (401
otherwise). A body over `max_body` bytes is 413; a request that takes over `timeout` seconds is
504 with MLflow's message; no answer ever holds a stack trace.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlkit import __version__
from mlkit.serve.batching import Runner
from mlkit.serve.holder import ModelHolder
from mlkit.serve.metrics import ServeMetrics
from mlkit.serve.protocol import (
    PREDICT_FAILED,
    ScoringError,
    UnsupportedMedia,
    parse_request,
    predictions_body,
)

log = logging.getLogger("mlkit.serve")
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
JSON = "application/json"


@dataclass
class AppConfig:
    token: str | None = None
    max_body: int = 64 << 20
    timeout: float = 60.0
    worker: int | None = None


def _error(error: ScoringError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=JSON)


class _TooLarge(Exception):
    pass


_PARSE_INLINE = 256 << 10  # bodies up to this size are parsed on the event loop (microseconds)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _Routes:
    """The endpoints, over one holder, runner, metrics and config."""

    def __init__(self, holder: ModelHolder, runner: Runner, metrics: ServeMetrics, config: AppConfig) -> None:
        self.holder, self.runner, self.metrics, self.config = holder, runner, metrics, config
        self.token = (config.token or "").encode()

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    @staticmethod
    def unauthorized() -> Response:
        error = ScoringError(
            "UNAUTHENTICATED", "missing or wrong bearer token (Authorization: Bearer <token>)", 401
        )
        return Response(
            error.body(), status_code=401, media_type=JSON, headers={"WWW-Authenticate": "Bearer"}
        )

    async def ping(self, request: Request) -> Response:
        ok = self.holder.current is not None
        return Response("\n", status_code=200 if ok else 503, media_type=JSON)

    async def version(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        return Response(__version__, media_type=JSON)

    async def model_info(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        loaded = self.holder.current
        if loaded is None:
            return _error(ScoringError("TEMPORARILY_UNAVAILABLE", "a new model version is loading", 503))
        parsed = self.holder.parsed
        info = loaded.describe(parsed)
        info.update(follows=parsed.version is None and parsed.kind == "models", device=self.holder.device)
        info.update(pid=os.getpid(), worker=self.config.worker)
        return Response(json.dumps(info), media_type=JSON)

    async def metrics_text(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def invocations(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._invocations(request)
        self.metrics.observe(time.perf_counter() - started, response.status_code)
        return response

    async def _invocations(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        scoring = self._read_and_score(request)
        try:
            if _timeout is None:  # Python 3.10
                return await asyncio.wait_for(scoring, self.config.timeout)
            async with _timeout(self.config.timeout):  # no extra task per request, as wait_for makes
                return await scoring
        except (asyncio.TimeoutError, TimeoutError):  # MLflow's answer, word for word
            return Response("Request processing time exceeded limit", status_code=504, media_type=JSON)

    async def _read_and_score(self, request: Request) -> Response:
        """Read the body (within --max-body) and score it: both within --timeout, so a client that
        sends its body slowly holds a connection no longer than a slow model would."""
        limit = self.config.max_body
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            why = f"the request body is over the server's limit of {limit} bytes (--max-body)"
            return _error(ScoringError("REQUEST_LIMIT_EXCEEDED", why, 413))
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            return _error(ScoringError("BAD_REQUEST", "the client disconnected before the body was read"))
        loaded = self.holder.current  # this request runs on this version to the end
        if loaded is None:
            why = "a new model version is loading; retry shortly"
            return _error(ScoringError("TEMPORARILY_UNAVAILABLE", why, 503))
        return await self._score(loaded, body, request.headers.get("content-type"))

    async def _score(self, loaded: Any, body: bytes, content_type: str | None) -> Response:
        try:
            if len(body) > _PARSE_INLINE:  # a large body is parsed off the event loop (/health stays quick)
                parsed = await asyncio.to_thread(parse_request, body, content_type, loaded.specs)
            else:
                parsed = parse_request(body, content_type, loaded.specs)
            predictions = await self.runner.predict(loaded, parsed.data, parsed.params)
        except UnsupportedMedia as exc:
            return Response(str(exc), status_code=415, media_type="text/plain")
        except ScoringError as exc:
            return _error(exc)
        except Exception as exc:  # the model failed on this input: MLflow's 400, no stack trace
            detail = (getattr(exc, "message", None) or str(exc)).strip()
            first = detail.splitlines()[0][:300] if detail else type(exc).__name__
            log.info("prediction failed: %s: %s", type(exc).__name__, first)
            return _error(ScoringError("BAD_REQUEST", f"{PREDICT_FAILED} Error: {first}"))
        return Response(predictions_body(predictions), media_type=JSON)


def build_app(holder: ModelHolder, runner: Runner, metrics: ServeMetrics, config: AppConfig) -> Starlette:
    """The Starlette app of one server process."""
    r = _Routes(holder, runner, metrics, config)
    routes = [
        Route("/ping", r.ping, methods=["GET"]),
        Route("/health", r.ping, methods=["GET"]),
        Route("/version", r.version, methods=["GET"]),
        Route("/invocations", r.invocations, methods=["POST"]),
        Route("/v1/model", r.model_info, methods=["GET"]),
        Route("/metrics", r.metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes)
