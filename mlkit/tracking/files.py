"""Low-level file I/O of the store: YAML meta files, value files, metric lines.

Metadata is written to a temp file in the same directory, then `os.replace`d (atomic). Metric
lines are appended with one `write` each, so a crash leaves at most a torn last line, which
`parse_metric_lines` skips.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlkit.errors import StoreError
from mlkit.tracking.entities import Metric
from mlkit.tracking.flatyaml import parse_flat


def _yaml() -> Any:
    import yaml  # lazily: `import mlkit` must not import yaml

    return yaml


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text exactly as MLflow writes it (safe_dump, block style, sorted keys, unicode)."""
    yaml = _yaml()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, default_flow_style=False, allow_unicode=True, sort_keys=True)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text: a flat meta.yaml by the fast path, anything else with PyYAML's C loader."""
    flat = parse_flat(text)
    if flat is not None:
        return flat
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a meta.yaml; retry briefly when empty (a concurrent in-place writer, as MLflow does)."""
    for delay in (0.1, 0.2, None):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc}", hint="check the file's permissions") from exc
        if text.strip() or delay is None:
            break
        time.sleep(delay)
    try:
        data = load_yaml_text(text)
    except Exception as exc:  # yaml.YAMLError, but yaml is imported lazily
        raise StoreError(
            f"{path}: malformed YAML: {exc}", hint="fix or remove the file; the store keeps the rest"
        ) from exc
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a mapping, found {type(data).__name__}", hint="fix the file")
    return data


def _temp_beside(path: Path) -> Path:
    """A temp file name in path's directory: hidden, unique per process and call, `.tmp` (readers skip it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and os.replace."""
    tmp = _temp_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            mode = path.stat().st_mode & 0o777
            os.chmod(tmp, mode)
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StoreError(f"{path}: cannot write: {exc}", hint="check free space and permissions") from exc


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text` in a single open/write/close, for a file in a directory no reader
    looks at yet (a run being created is not a run until its meta.yaml exists): no temp file."""
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc}", hint="check free space and permissions") from exc


def write_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a meta.yaml atomically."""
    write_atomic(path, dump_yaml(data))


def create_exclusive(path: Path, text: str) -> bool:
    """Create `path` with `text` atomically unless it exists; False when it already existed."""
    tmp = _temp_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc}", hint="check free space and permissions") from exc
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def read_value(path: str | os.PathLike[str]) -> str:
    """The whole content of a param or tag file (no trailing newline is added or removed)."""
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def read_value_dir(directory: Path) -> dict[str, str]:
    """Every value file under `directory` as {key: value}; '/' in keys are subdirectories."""
    values: dict[str, str] = {}
    if not directory.is_dir():
        return values
    base = len(str(directory)) + 1
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # a writer's temp file
            full = os.path.join(dirpath, name)
            try:
                values[full[base:]] = read_value(Path(full))
            except FileNotFoundError:
                continue
    return values


def list_keys(directory: Path) -> list[str]:
    """Every key (relative file path) under `directory`."""
    keys: list[str] = []
    if not directory.is_dir():
        return keys
    base = len(str(directory)) + 1
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            keys.append(os.path.join(dirpath, name)[base:])
    return keys


def format_metric_line(value: float, timestamp: int, step: int) -> bytes:
    """One metric line as MLflow writes it: '<timestamp_ms> <value> <step>\\n'."""
    return f"{timestamp} {value!r} {step}\n".encode()


def parse_metric_lines(
    data: bytes, key: str, path: str | os.PathLike[str] | None = None
) -> tuple[list[Metric], int]:
    """Parse metric file bytes; skip a torn last line. Returns (metrics, bytes consumed)."""
    end = data.rfind(b"\n") + 1  # everything after the last newline is a torn (partial) line
    metrics: list[Metric] = []
    if end == 0:
        return metrics, 0
    for lineno, line in enumerate(data[:end].decode("utf-8", "replace").splitlines(), 1):
        fields = line.split(" ")
        n = len(fields)
        try:
            if n in (3, 5):
                metrics.append(Metric(key, float(fields[1]), int(fields[0]), int(fields[2])))
                continue
            if n == 2:
                metrics.append(Metric(key, float(fields[1]), int(fields[0]), 0))
                continue
        except ValueError:
            pass
        if not line.strip():
            continue
        raise StoreError(
            f"{path or key}: line {lineno} is malformed ({line[:60]!r}); expected "
            "'<timestamp> <value> <step>'",
            hint="fix or delete that line; mlkit and MLflow cannot read the metric until then",
        )
    return metrics, end


def latest_metric(metrics: list[Metric]) -> Metric | None:
    """The latest value as MLflow defines it: max of (step, timestamp, value)."""
    if not metrics:
        return None
    return max(metrics, key=lambda m: (m.step, m.timestamp, m.value))


def path_from_uri(uri: str) -> Path | None:
    """The local path of a file:// URI or plain path; None for other schemes."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


def path_to_uri(path: Path) -> str:
    """A file:// URI for an absolute path, as MLflow writes it."""
    return Path(path).absolute().as_uri()


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)
