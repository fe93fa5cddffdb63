"""The model a server answers with, and how it follows the registry.

`ModelHolder.current` is the loaded version (a `Loaded`). A request takes that reference once and
predicts with it to the end, so a swap never changes the version under a request in flight; the
old version is freed when its last request finishes.

For `models:/NAME@ALIAS`, `models:/NAME/STAGE` and `models:/NAME/latest` the holder re-resolves the
URI whenever the model's registry directory changes (inotify on `models/NAME/` and its `aliases/`;
every registry change also appends to its audit log there), and every `poll_interval` seconds as a
fallback (NFS, no inotify). A new version is loaded beside the old one, warmed with its input
example and then swapped in by one assignment. A version that fails to load or to warm up is not
swapped in: it is logged, counted (`mlkit_serve_reload_failures_total`) and not tried again until
the URI resolves to something else. On a GPU without room for both versions, the old one is
unloaded first (requests get 503 for the few seconds of the load) and comes back if the new one fails.
Every swap is written to the model's audit log (`mlkit models history NAME`).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.errors import MlkitError
from mlkit.models.format import ModelLoadError, read_mlmodel
from mlkit.models.uri import ModelUri, ResolvedModel, parse_model_uri, resolve_model_uri
from mlkit.serve.protocol import TensorSpec, input_specs, parse_request

log = logging.getLogger("mlkit.serve")

# inotify(7) event bits: a file written, renamed in or out, created or deleted
_IN_EVENTS = 0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200


@dataclass
class Loaded:
    """One loaded model version and what /v1/model says about it."""

    uri: str
    path: Path
    version: int | None
    run_id: str | None
    predictor: Any  # mlkit.models.pyfunc.TorchPyfuncModel
    specs: list[TensorSpec]
    example: bytes | None  # the input example as a JSON request body
    loaded_at: float = field(default_factory=time.time)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        return self.predictor.predict(data, params)

    def describe(self, parsed: ModelUri) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "name": parsed.name,
            "alias": parsed.alias,
            "stage": parsed.stage,
            "version": self.version,
            "run_id": self.run_id,
            "source": str(self.path),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }


def _why(exc: BaseException) -> str:
    """An exception as one short line for the log, /metrics' audit entry and error messages."""
    text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    return (text.splitlines() or [text])[0][:300]


def follows(parsed: ModelUri) -> bool:
    """Whether the URI can point at another version later (alias, stage, latest)."""
    return parsed.kind == "models" and parsed.version is None


def load_version(resolved: ResolvedModel, device: str) -> Loaded:
    """Load and warm one resolved model version on `device` (raises on any failure)."""
    # import budget: the predictor (and torch) load only when the server loads a model
    from mlkit.models.pyfunc import load_predictor

    mlmodel = read_mlmodel(resolved.path)
    predictor = load_predictor(resolved.path, map_location=device)
    specs = input_specs(mlmodel)
    example = None
    info = mlmodel.get("saved_input_example_info") or {}
    if info.get("artifact_path"):
        example = (resolved.path / str(info["artifact_path"])).read_bytes()
    loaded = Loaded(
        resolved.uri,
        resolved.path,
        resolved.version.version if resolved.version else None,
        resolved.run_id,
        predictor,
        specs,
        example,
    )
    if example is not None:  # warm-up: the first request must not pay for lazy init (cuDNN, allocator)
        request = parse_request(example, "application/json", specs)
        loaded.predict(request.data, request.params)
    return loaded


class ModelHolder:
    """The current model version, swapped when the registry moves the URI elsewhere."""

    def __init__(
        self,
        uri: str,
        *,
        root: Path | None,
        device: str,
        poll_interval: float = 1.0,
        on_swap: Callable[[int | None, Loaded], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.uri = uri
        self.parsed = parse_model_uri(uri)
        self.root = root
        self.device = device
        self.poll_interval = poll_interval
        self.on_swap = on_swap
        self.on_failure = on_failure
        self.current: Loaded | None = None
        self.failed: tuple[str, int | None] | None = None  # (path, version) that failed: not retried
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time

    # ------------------------------------------------------------------ loading and swapping
    def load_initial(self) -> Loaded:
        """Resolve and load the URI now; an error is one MlkitError (the server does not start)."""
        resolved = resolve_model_uri(self.uri, root=self.root)
        try:
            loaded = load_version(resolved, self.device)
        except MlkitError:
            raise
        except Exception as exc:  # the warm-up forward, CUDA out of memory, a missing example file
            raise ModelLoadError(
                f"{self.uri}: cannot load or warm up {resolved.path}: {_why(exc)}",
                hint="check that the model loads with mlkit.models.load_model, on this device",
            ) from exc
        self.current = loaded
        return loaded

    def check(self) -> bool:
        """Re-resolve the URI; load, warm and swap in a new version. True when it swapped."""
        with self._lock:
            try:
                resolved = resolve_model_uri(self.uri, root=self.root)
            except MlkitError as exc:  # alias deleted, registry being edited: keep serving
                log.warning("cannot resolve %s: %s; still serving the loaded version", self.uri, exc.message)
                return False
            new_version = resolved.version.version if resolved.version else None
            old = self.current
            if old is not None and old.version == new_version and old.path == resolved.path:
                self.failed = None  # back on the loaded version: a failed one is tried again if named again
                return False
            key = (str(resolved.path), new_version)
            if self.failed == key:
                return False
            old_version = old.version if old is not None else None
            previous = ResolvedModel(old.uri, old.path, old.run_id, None, "") if old is not None else None
            unload_first = old is not None and not self._room_for_both(resolved.path)
            if unload_first:
                log.warning(
                    "not enough free GPU memory for two versions: unloading version %s first", old_version
                )
                self.current = None  # requests get 503 until the new version is in
                del old  # requests in flight keep their own reference until they finish
                self._free()
            try:
                loaded = load_version(resolved, self.device)
            except Exception as exc:
                why = _why(exc)
                log.error(
                    "version %s of %s failed to load or warm up, not swapped in: %s",
                    new_version,
                    self.uri,
                    why,
                )
                self.failed = key
                if unload_first and previous is not None:
                    why += self._restore(previous, old_version)
                if self.on_failure is not None:
                    self.on_failure(f"version {new_version}: {why}")
                return False
            self.failed = None
            self.current = loaded  # the swap: requests from now on use the new version
            log.info("now serving version %s of %s (was %s)", new_version, self.uri, old_version)
            if self.on_swap is not None:
                self.on_swap(old_version, loaded)
            return True

    def _restore(self, previous: ResolvedModel, version: int | None) -> str:
        """Load the version that was unloaded for a swap that failed; "" or why it could not be."""
        try:
            restored = load_version(previous, self.device)
        except Exception as exc:
            log.error("version %s could not be loaded again (%s): nothing is served until %s moves",
                      version, _why(exc), self.uri)  # fmt: skip
            return f"; version {version} could not be loaded again: {_why(exc)}"
        restored.version = version
        self.current = restored
        return ""

    def _room_for_both(self, path: Path) -> bool:
        """On a GPU: whether free memory holds the new version's weights (x2 for the forward's
        working memory); always True on the CPU."""
        if not self.device.startswith("cuda"):
            return True
        # import budget: torch is loaded already (a model is)
        import torch

        weights = sum(p.stat().st_size for p in path.rglob("*.pt"))
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return bool(free > 2 * weights + (256 << 20))

    def _free(self) -> None:
        if self.device.startswith("cuda"):
            # import budget: torch is loaded already (a model is)
            import torch

            gc.collect()  # the unloaded version's tensors, if a reference cycle still holds them
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ watching the registry
    def start_watching(self) -> None:
        if not follows(self.parsed) or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="mlkit-serve-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watched_dirs(self) -> list[Path]:
        # import budget: the registry paths only (no I/O at import)
        from mlkit.tracking.registry import RegistryStore

        model_dir = RegistryStore(self.root).models_dir / str(self.parsed.name)
        return [model_dir, model_dir / "aliases"]

    def _watch(self) -> None:
        notify = _Inotify.open()
        try:
            while not self._stop.is_set():
                if notify is not None:
                    for path in self._watched_dirs():
                        notify.add(path)
                    notify.wait(self.poll_interval)
                else:
                    self._stop.wait(self.poll_interval)
                if self._stop.is_set():
                    break
                try:
                    self.check()
                except Exception:  # never let the watcher die: the next change tries again
                    log.exception("reload check failed")
        finally:
            if notify is not None:
                notify.close()


class _Inotify:
    """Linux inotify through libc (no extra package); None where it is not available."""

    def __init__(self, libc: Any, fd: int) -> None:
        self.libc, self.fd = libc, fd
        self.watched: set[str] = set()

    @classmethod
    def open(cls) -> _Inotify | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(libc, fd) if fd >= 0 else None

    def add(self, path: Path) -> None:
        key = str(path)
        if key in self.watched or not path.is_dir():
            return
        if self.libc.inotify_add_watch(self.fd, key.encode(), _IN_EVENTS) >= 0:
            self.watched.add(key)

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            time.sleep(0.02)  # let a rename + audit-log append settle into one wake-up
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass
            self.watched.clear()  # a deleted and re-created directory needs a new watch

    def close(self) -> None:
        os.close(self.fd)
