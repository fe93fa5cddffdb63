"""Running predictions: one at a time per model (one forward pass uses every core or the whole
GPU), and, with --max-batch-size, concurrent requests grouped into one forward pass.

A request joins the open group of its key (the model version it started on, the shape of one row,
the dtype); a group runs when it holds `max_batch_size` rows, or when its oldest request has waited
`max_batch_delay` and no forward pass is running (while one runs, the group keeps filling, so
batches grow with the load instead of queueing up behind each other). Requests of other shapes or dtypes, named inputs, strings and requests with
params never share a pass. The predictions are split back by each request's row count. If a
grouped pass fails, each request is run alone, so one request's failure is its own.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlkit.serve.holder import Loaded
from mlkit.serve.metrics import ServeMetrics


@dataclass
class _Group:
    loaded: Loaded
    items: list[tuple[np.ndarray, asyncio.Future[Any]]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # its delay is over: it runs as soon as no forward pass is running


class Runner:
    """Runs `loaded.predict` off the event loop: unbatched, or batched when max_batch_size > 1."""

    def __init__(
        self, metrics: ServeMetrics, *, max_batch_size: int = 1, max_batch_delay: float = 0.0
    ) -> None:
        self.metrics = metrics
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_delay = max(0.0, max_batch_delay)
        # one forward pass at a time: torch already spreads one pass over all cores / the GPU
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlkit-serve-predict")
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.waiting = 0
        self.running = 0  # forward passes submitted and not finished

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    async def predict(self, loaded: Loaded, data: Any, params: dict[str, Any] | None) -> Any:
        if self.max_batch_size > 1 and _batchable(data, params):
            return await self._batched(loaded, data)
        return await self._run(loaded, data, params)

    async def _run(self, loaded: Loaded, data: Any, params: dict[str, Any] | None) -> Any:
        rows = data.shape[0] if isinstance(data, np.ndarray) and data.ndim else 1
        self.metrics.batch_size.observe(rows)
        loop = asyncio.get_running_loop()
        self.running += 1
        try:
            return await loop.run_in_executor(self.executor, loaded.predict, data, params)
        finally:
            self.running -= 1
            if not self.running:
                self._flush_due()

    def _due(self, key: tuple[Any, ...], group: _Group) -> None:
        """A group's delay is over: run it now if the model is idle, else when it becomes idle
        (meanwhile it keeps filling: under load, batches grow instead of queueing)."""
        group.due = True
        if not self.running:
            self._flush(key, group)
        else:  # requests that are never batched (params, strings) could keep the model busy forever:
            # the group waits at most a few more delays, then queues behind the passes running
            wait = max(3 * self.max_batch_delay, 0.01)
            group.timer = asyncio.get_running_loop().call_later(wait, self._flush, key, group)

    def _flush_due(self) -> None:
        for key, group in list(self.groups.items()):
            if group.due:
                self._flush(key, group)
                return  # one at a time: the next one keeps filling while this one runs

    async def _batched(self, loaded: Loaded, data: np.ndarray) -> Any:
        loop = asyncio.get_running_loop()
        key = (id(loaded), data.shape[1:], data.dtype.str)
        future: asyncio.Future[Any] = loop.create_future()
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(loaded)
            group.timer = loop.call_later(self.max_batch_delay, self._due, key, group)
        group.items.append((data, future))
        group.rows += data.shape[0]
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        if group.rows >= self.max_batch_size:
            self._flush(key, group)
        return await future

    def _flush(self, key: tuple[Any, ...], group: _Group) -> None:
        if self.groups.get(key) is not group:
            return  # already flushed (full before its delay ran out)
        del self.groups[key]
        if group.timer is not None:
            group.timer.cancel()
        self.waiting -= len(group.items)
        self.metrics.queue_depth.set(self.waiting)
        asyncio.get_running_loop().create_task(self._run_group(group))

    async def _run_group(self, group: _Group) -> None:
        arrays = [a for a, _ in group.items]
        try:
            out = await self._run(
                group.loaded, arrays[0] if len(arrays) == 1 else np.concatenate(arrays), None
            )
            out = np.asarray(out)
            if out.shape[:1] != (group.rows,):
                raise ValueError(f"the model returned {out.shape[:1]} rows for {group.rows}")
        except Exception as exc:
            if len(arrays) == 1:
                _settle(group.items[0][1], exc=exc)
                return
            for data, future in group.items:  # one bad row must not fail the others' requests
                try:
                    _settle(future, await self._run(group.loaded, data, None))
                except Exception as single:
                    _settle(future, exc=single)
            return
        start = 0
        for data, future in group.items:
            _settle(future, out[start : start + data.shape[0]])
            start += data.shape[0]


def _settle(future: asyncio.Future[Any], value: Any = None, *, exc: BaseException | None = None) -> None:
    if future.done():  # the request timed out and went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _batchable(data: Any, params: dict[str, Any] | None) -> bool:
    return (
        not params
        and isinstance(data, np.ndarray)
        and data.ndim >= 1
        and data.shape[0] > 0
        and data.dtype.kind in "biuf"
    )
