"""`mlkit models serve`: check the options, lease GPUs, record the run, load, serve, drain.

One process serves on one device. `--workers N` starts N such processes (one GPU each, or the
CPU) on one port (SO_REUSEPORT: the kernel spreads connections over them); the parent holds the
lease and the serving run, each worker records a child run. SIGTERM (or Ctrl-C) stops accepting,
lets requests in flight finish, ends the run FINISHED and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError, MlkitError, UsageError
from mlkit.models.uri import parse_model_uri, resolve_model_uri

log = logging.getLogger("mlkit.serve")
WORKER_ENV = "MLKIT_SERVE_WORKER"


@dataclass
class ServeOptions:
    uri: str
    host: str = "127.0.0.1"
    port: int = 5000
    gpus: str = "auto"
    min_free_memory: str | None = None
    workers: int = 1
    max_batch_size: int = 1
    max_batch_delay: float = 0.0  # seconds
    token_file: str | None = None
    max_body: int = 64 << 20
    timeout: float = 60.0
    poll_interval: float = 1.0
    record_interval: float = 60.0
    experiment: str | None = None
    store: str | None = None


@dataclass
class Started:
    """What the CLI prints once the server answers."""

    url: str
    uri: str
    version: int | None
    run_id: str
    device: str
    workers: int
    notice: str | None = None


def read_token(path: str | None) -> str | None:
    """The bearer token in `--token-file` (first line, stripped); refuses an empty or world-readable file."""
    if path is None:
        return None
    try:
        info = os.stat(path)
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(
            f"--token-file {path}: cannot read it: {exc.strerror}",
            hint="write the token into a file only you can read",
        ) from exc
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"--token-file {path}: is not UTF-8 text", hint="write the token as one line of text"
        ) from None
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "anyone on this machine" if info.st_mode & stat.S_IROTH else "its group"
        raise InvalidInputError(f"--token-file {path}: {who} can read it", hint=f"chmod 600 {path}")
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise InvalidInputError(
            f"--token-file {path}: the token is {'empty' if not token else 'shorter than 16 characters'}",
            hint="e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > tok; chmod 600 tok",
        )
    return token


def check_options(opts: ServeOptions) -> str | None:
    """Every option checked before anything is created; returns the token."""
    parse_model_uri(opts.uri)
    missing = [
        m for m in ("uvicorn", "starlette", "prometheus_client") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise UsageError(
            f"mlkit models serve needs {', '.join(missing)}, which is not installed",
            hint="pip install 'mlkit[serve]'",
        )
    if opts.workers < 1:
        raise UsageError(f"--workers {opts.workers}: must be at least 1", hint="e.g. --workers 2 on two GPUs")
    if opts.max_batch_size < 1:
        raise UsageError(
            f"--max-batch-size {opts.max_batch_size}: must be at least 1", hint="1 turns batching off"
        )
    if opts.max_batch_delay < 0 or opts.timeout <= 0 or opts.max_body < 1:
        raise UsageError(
            "--max-batch-delay, --timeout and --max-body must be positive", hint="e.g. --max-batch-delay 5ms"
        )
    count = opts.gpus.strip()
    if opts.workers > 1 and count.isdigit() and int(count) not in (0, opts.workers):
        raise UsageError(
            f"--workers {opts.workers} runs one process per GPU, but --gpus asks for {count}",
            hint=f"--gpus {opts.workers} (or auto), or --gpus none for CPU workers",
        )
    if not 0 <= opts.port <= 65535:
        raise UsageError(f"--port {opts.port}: not a TCP port", hint="e.g. --port 5000 (0 picks a free one)")
    return read_token(opts.token_file)


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit it: small answers go out at once, not after the client's
    # delayed ACK (40 ms per keep-alive request otherwise)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}", hint="pick another --port (0 picks a free one)"
        ) from exc
    sock.set_inheritable(False)
    return sock


def serve(opts: ServeOptions, *, on_ready: Callable[[Started], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a drain)."""
    token = check_options(opts)
    root = Path(opts.store) if opts.store else None
    resolved = resolve_model_uri(opts.uri, root=root)  # a wrong URI fails here, before any record
    parsed = parse_model_uri(opts.uri)
    # import budget: the serving record, the GPU ledger and the web stack load only for `models serve`
    from mlkit.gpu.reserving import reserve
    from mlkit.gpu.select import GpuRequest
    from mlkit.serve.record import ServingRecord

    request = GpuRequest.parse(opts.gpus, min_free_memory=opts.min_free_memory)
    if opts.workers > 1 and request.kind == "auto":
        request = GpuRequest.parse(str(opts.workers), min_free_memory=opts.min_free_memory)
        request = request if _gpus_present() else GpuRequest.parse("none")
    name = parsed.name or Path(resolved.path).name
    suffix = f"@{parsed.alias}" if parsed.alias else (f"/{parsed.stage}" if parsed.stage else "")
    # an address that cannot be listened on (taken, not this host's) is exit 2 with no record left,
    # as every usage error is; with --workers this socket keeps the port while the workers start
    sock = _bind(opts.host, opts.port, reuse_port=opts.workers > 1)
    try:
        record = ServingRecord(root, run_name=f"serve-{name}{suffix}", experiment=opts.experiment)
    except BaseException:
        sock.close()
        raise
    status = "FAILED"
    lease = None
    worker_owns_record = False
    try:
        lease = reserve(request, run_id=record.run_id, owner_pid=os.getpid(), role="serving")
        if opts.workers > 1 and lease.gpus and len(lease.gpus) != opts.workers:
            raise UsageError(
                f"--workers {opts.workers} runs one process per GPU, but --gpus {opts.gpus} leased {len(lease.gpus)}",
                hint=f"ask for as many GPUs as workers (--gpus {opts.workers}), or --gpus none for CPU workers",
            )
        os.environ.update(lease.env)
        record.set_tags(lease.tags)
        record.log_params(
            {
                "model_uri": opts.uri,
                "model_version": resolved.version.version if resolved.version else None,
                "model_run_id": resolved.run_id,
                "model_source": resolved.source,
                "host": opts.host,
                "workers": opts.workers,
                "max_batch_size": opts.max_batch_size,
                "max_batch_delay_ms": round(opts.max_batch_delay * 1000, 3),
                "gpus": ",".join(lease.uuids) or "none",
            }
        )
        if opts.workers > 1:
            code = _serve_workers(opts, record.run_id, lease.uuids, on_ready, lease.notice, sock)
        else:
            device = "cuda:0" if lease.gpus else "cpu"
            worker_owns_record = True  # run_worker ends the record however it ends
            code = run_worker(
                opts, token, device, record=record, on_ready=on_ready, notice=lease.notice, sock=sock
            )
        status = "FINISHED" if code == 0 else "FAILED"
        return code
    finally:
        sock.close()  # (the server closed it already when it served)
        if not worker_owns_record:
            record.end(status)
        if lease is not None:
            lease.release()


def _gpus_present() -> bool:
    # import budget: the probe loads only for --workers with --gpus auto
    from mlkit.gpu.devices import read_gpus

    return bool(read_gpus([]).gpus)


def run_worker(
    opts: ServeOptions,
    token: str | None,
    device: str,
    *,
    record: Any,
    on_ready: Callable[[Started], None] | None = None,
    notice: str | None = None,
    sock: socket.socket | None = None,
    worker: int | None = None,
) -> int:
    """Load the model on `device` and serve on `sock` (or host:port) until a signal; ends `record`."""
    # import budget: uvicorn, starlette and prometheus-client load only here
    import uvicorn

    # the app, batching, holder and metrics import starlette, numpy and prometheus-client
    from mlkit.serve.app import AppConfig, build_app
    from mlkit.serve.batching import Runner
    from mlkit.serve.holder import Loaded, ModelHolder
    from mlkit.serve.metrics import ServeMetrics, gpu_memory
    from mlkit.tracking.registry import RegistryStore

    root = Path(opts.store) if opts.store else None
    metrics = ServeMetrics()
    parsed = parse_model_uri(opts.uri)

    def on_swap(old_version: int | None, new: Loaded) -> None:
        metrics.swaps.inc()
        metrics.version.set(new.version or 0)
        record.set_tags({"mlkit.serve.model_version": str(new.version)})
        if parsed.name:
            RegistryStore(root).record_event(
                parsed.name,
                "serve_swap",
                version=new.version,
                from_=old_version,
                to=new.version,
                details={"uri": opts.uri, "serving_run": record.run_id, "pid": os.getpid(), "worker": worker},
            )

    def on_failure(why: str) -> None:
        metrics.reload_failures.inc()
        if parsed.name:
            RegistryStore(root).record_event(
                parsed.name,
                "serve_reload_failed",
                details={"uri": opts.uri, "serving_run": record.run_id, "why": why},
            )

    holder = ModelHolder(
        opts.uri,
        root=root,
        device=device,
        poll_interval=opts.poll_interval,
        on_swap=on_swap,
        on_failure=on_failure,
    )
    status = "FAILED"
    runner = None
    try:
        loaded = holder.load_initial()
        metrics.version.set(loaded.version or 0)
        record.log_params({"device": device})
        runner = Runner(metrics, max_batch_size=opts.max_batch_size, max_batch_delay=opts.max_batch_delay)
        app = build_app(holder, runner, metrics, AppConfig(token, opts.max_body, opts.timeout, worker))
        sock = sock or _bind(opts.host, opts.port, reuse_port=False)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=int(max(opts.timeout, 5))
        )
        server = uvicorn.Server(config)

        def sample() -> dict[str, float]:
            values = metrics.take_window()
            values["model_version"] = float((holder.current.version if holder.current else None) or 0)
            memory = gpu_memory(device)
            if memory is not None:
                values["gpu_memory_bytes"] = float(memory)
                metrics.gpu_memory.set(memory)
            return values

        record.start_flushing(sample, opts.record_interval)
        holder.start_watching()
        started = Started(
            f"http://{_url_host(opts.host)}:{port}",
            opts.uri,
            loaded.version,
            record.run_id,
            device,
            opts.workers,
            notice,
        )
        ready = threading.Thread(target=_announce, args=(server, started, on_ready), daemon=True)
        ready.start()
        # uvicorn re-raises a caught SIGTERM/SIGINT after its drain through the handler that was
        # there before it: make that one a no-op so the drained server exits 0.
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        holder.stop()
        status = "FINISHED"
        return 0
    finally:
        holder.stop()
        if runner is not None:
            runner.close()
        record.end(status, None if status == "FAILED" else metrics.take_window)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _announce(server: Any, started: Started, on_ready: Callable[[Started], None] | None) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.02)
    if server.started and on_ready is not None:
        on_ready(started)


# ---------------------------------------------------------------------------------- --workers N
def _serve_workers(
    opts: ServeOptions,
    run_id: str,
    uuids: list[str],
    on_ready: Callable[[Started], None] | None,
    notice: str | None,
    holder: socket.socket,
) -> int:
    """Start one worker process per GPU (or `workers` CPU processes) on one SO_REUSEPORT port;
    `holder`, bound to it with SO_REUSEPORT, keeps the port ours while they start."""
    # import budget: the subprocess helper loads only for --workers
    import tempfile

    # the subprocess helper, for the workers only
    from mlkit import proc

    port = holder.getsockname()[1]
    ready_dir = tempfile.mkdtemp(prefix="mlkit-serve-")
    children = []
    try:
        for i in range(opts.workers):
            env = {
                WORKER_ENV: json.dumps(
                    {
                        "options": {**asdict(opts), "port": port},
                        "parent": run_id,
                        "worker": i,
                        "ready": ready_dir,
                    }
                ),
                "CUDA_VISIBLE_DEVICES": uuids[i] if uuids else "",
            }
            argv = proc.python_module_argv(sys.executable, "mlkit.serve.worker")
            # own sessions: a terminal's Ctrl-C reaches the parent alone, which passes it on once
            children.append(proc.spawn(argv, env=env, new_session=True, die_with_parent=True))

        def pass_on(sig: int, _frame: Any) -> None:
            for child in children:
                child.send_signal(sig)

        forward = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while len(os.listdir(ready_dir)) < len(children):
                if any(c.poll() is not None for c in children):
                    for c in children:
                        if c.poll() is None:
                            c.terminate()
                    break
                time.sleep(0.05)
            else:
                if on_ready is not None:
                    device = "cuda" if uuids else "cpu"
                    version = resolve_model_uri(
                        opts.uri, root=Path(opts.store) if opts.store else None
                    ).version
                    on_ready(
                        Started(
                            f"http://{_url_host(opts.host)}:{port}",
                            opts.uri,
                            version.version if version else None,
                            run_id,
                            device,
                            opts.workers,
                            notice,
                        )
                    )
            codes = [c.wait() for c in children]
        finally:
            for sig, handler in forward.items():
                signal.signal(sig, handler)
        return 0 if all(c == 0 for c in codes) else 1
    finally:
        holder.close()
        for name in os.listdir(ready_dir):
            os.unlink(os.path.join(ready_dir, name))
        os.rmdir(ready_dir)


def worker_main() -> int:
    """Entry of one `--workers` process (`python -m mlkit.serve.worker`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mlkit.serve[%(process)d] %(message)s")
    spec = json.loads(os.environ.pop(WORKER_ENV))
    opts = ServeOptions(**spec["options"])
    worker = int(spec["worker"])
    # import budget: the record loads in the worker only
    from mlkit.serve.record import ServingRecord

    try:
        token = read_token(opts.token_file)
        root = Path(opts.store) if opts.store else None
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or ""
        record = ServingRecord(
            root, run_name=f"worker-{worker}", experiment=opts.experiment, parent_run_id=spec["parent"],
            tags={"mlkit.serve.worker": str(worker), "mlkit.gpu_uuids": gpu},
        )  # fmt: skip
        sock = _bind(opts.host, opts.port, reuse_port=True)

        def ready(_: Started) -> None:
            Path(spec["ready"], str(worker)).write_text("ready")

        return run_worker(
            opts, token, "cuda:0" if gpu else "cpu", record=record, on_ready=ready, sock=sock, worker=worker
        )
    except MlkitError as exc:
        print(f"mlkit serve worker {worker}: {exc.message}", file=sys.stderr)
        return 1
