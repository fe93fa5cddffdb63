"""Low-level file I/O of the store: YAML meta files, value files, metric lines.

Metadata, params and tags are written to a temp file and renamed (or linked) into place
(fsio.atomic_write); a param's or tag's temp file lies in the run directory, never in `params/`
or `tags/` where readers list keys. Metric lines are appended whole or not at all
(`append_whole`); a torn last line left by older writers is skipped by `parse_metric_lines`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlkit import fsio
from mlkit.errors import MalformedMetricError, StoreError
from mlkit.tracking.entities import Metric
from mlkit.tracking.flatyaml import parse_flat
from mlkit.yamlfast import dump_flat


def _yaml() -> Any:
    import yaml  # lazily: `import mlkit` must not import yaml

    return yaml


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text exactly as MLflow writes it (safe_dump, block style, sorted keys, unicode); a flat
    meta.yaml without importing PyYAML (`yamlfast.dump_flat`: the same bytes)."""
    flat = dump_flat(data)
    if flat is not None:
        return flat
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
        except UnicodeDecodeError as exc:  # MLflow cannot read it either: one damaged file, not a store
            raise StoreError(
                f"{path}: not UTF-8 text (byte {exc.start})",
                hint="fix or remove the file; the store keeps the rest",
            ) from exc
        if text.strip() or delay is None:
            break
        time.sleep(delay)
    try:
        data = load_yaml_text(text)
    except Exception as exc:  # yaml.YAMLError, but yaml is imported lazily
        from mlkit.yamlsafe import yaml_problem  # import budget: only for a file that is not YAML

        raise StoreError(
            f"{path}: malformed YAML: {yaml_problem(exc)}",
            hint="fix or remove the file; the store keeps the rest",
        ) from exc
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a mapping, found {type(data).__name__}", hint="fix the file")
    return data


def read_run_meta(path: Path) -> dict[str, Any]:
    """A run's meta.yaml, its times checked: whole milliseconds, or empty. StoreError otherwise,
    as for malformed YAML, so the one run is left out instead of every sort and listing failing
    on a string where a number belongs (a hand edit, a foreign writer). A missing `status` reads
    as RUNNING, as MLflow reads it."""
    meta = read_yaml(path)
    for key in ("start_time", "end_time"):
        value = meta.get(key)
        if value and (isinstance(value, bool) or not isinstance(value, int)):
            raise StoreError(
                f"{path}: {key} is {value!r}, not milliseconds since the epoch",
                hint="fix or remove the file; the store keeps the rest",
            )
    return meta


def write_atomic(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Replace `path` with `text` atomically (fsio.atomic_write): the temp file is written in
    `tmp_dir` (same filesystem, where no reader lists keys: the run or experiment directory for a
    param or tag) or beside `path`; a full disk leaves `path` as it was and says so."""
    fsio.atomic_write(path, text, tmp_dir=tmp_dir)


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text` in a single open/write/close, for a file in a directory no reader
    looks at yet (a run being created is not a run until its meta.yaml exists): no temp file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fsio.write_all(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise fsio.write_error(path, exc) from exc


def write_yaml_atomic(path: Path, data: dict[str, Any], tmp_dir: Path | None = None) -> None:
    """Write a meta.yaml atomically."""
    write_atomic(path, dump_yaml(data), tmp_dir)


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite `path` with `text` in the blocks it already has, for when the disk is too full for
    a temp file: padded with newlines to the old length so the file never shrinks (YAML ignores
    them), one pwrite. Not atomic (MLflow writes a run's meta.yaml this way every time)."""
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            old = os.fstat(fd).st_size
            data += b"\n" * max(0, old - len(data))
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                n = os.pwrite(fd, view[offset:], offset)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                offset += n
        finally:
            os.close(fd)
    except OSError as exc:
        raise fsio.write_error(path, exc) from exc


def create_exclusive(path: Path, text: str, tmp_dir: Path | None = None) -> bool:
    """Create `path` with `text` atomically unless it exists; False when it already existed.

    The whole text goes to a temp file (in `tmp_dir`, away from readers, or beside `path`) that
    is then hard-linked to `path`: two writers can never both win."""
    tmp = fsio.temp_name(path, tmp_dir)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fsio.write_all(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    except OSError as exc:
        raise fsio.write_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def append_whole(fd: int, data: bytes) -> None:
    """Append `data` (whole lines) to an O_APPEND file: all of it, or none of it.

    One write in the common case. A short write is continued (fsio.write_all); if that fails the
    file is cut back to where it was, so no torn line is left for the next value to glue onto.
    Raises the OSError (the caller names the file: fsio.write_error)."""
    n = os.write(fd, data)  # a failing write(2) writes nothing: only a short one needs undoing
    if n != len(data):
        finish_append(fd, data, n)


def finish_append(fd: int, data: bytes, n: int) -> None:
    """Continue an append after a short write of `n` bytes of `data`; on failure cut the file
    back to where it was before the append, then raise."""
    before = os.fstat(fd).st_size - n
    try:
        fsio.write_all(fd, data[n:])
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, before)
        raise


def is_temp_name(name: str) -> bool:
    """True for a writer's temp file name (`.<name>.<pid>.<ns>.tmp`, fsio.temp_name)."""
    return name.startswith(".") and name.endswith(".tmp")


def read_value(path: str | os.PathLike[str]) -> str:
    """The whole content of a param or tag file, as MLflow reads it: no newline added, removed or
    translated (a `\r` stays one); bytes that are not UTF-8 read as U+FFFD, as in metric files."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
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
                values[full[base:]] = read_value(full)
            except FileNotFoundError:
                continue
            except OSError as exc:  # another user's file, kept to themselves: say which, in one line
                raise StoreError(
                    f"{full}: cannot read: {exc.strerror or exc}", hint="check the file's permissions"
                ) from exc
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
        raise MalformedMetricError(
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


# An absolute, normalised path that path_to_uri() turns into "file://" + the path unchanged: no
# character it would quote, no empty, "." or ".." segment. 12,500 runs returned by a search
# resolve their artifact URIs by this string comparison instead of ~60 µs of pathlib each.
_PLAIN_ABSOLUTE = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)+")


def path_to_uri(path: Path) -> str:
    """A file:// URI for an absolute path, as MLflow writes it."""
    return Path(path).absolute().as_uri()


def resolve_artifact_uri(run_dir: Path | str, uri: str) -> str:
    """The run's artifact URI as stored, or its `artifacts/` beside the data when the stored local
    path is gone (the store was moved); a remote URI as it is."""
    here = f"{run_dir}/artifacts"
    if uri == f"file://{here}" and _PLAIN_ABSOLUTE.fullmatch(here):
        return uri  # where the run is now (as path_to_uri writes it): no need to look
    run_dir = Path(run_dir)
    if uri.startswith("file://") and uri.endswith(f"{run_dir}/artifacts"):
        if uri == path_to_uri(run_dir / "artifacts"):
            return uri  # where the run is now, a path file:// quotes: no need to look either
    stored = path_from_uri(uri)
    if stored is not None and stored.exists():
        return uri
    local = run_dir / "artifacts"
    if stored is None and uri:
        return uri  # a remote artifact store: not ours to resolve
    return path_to_uri(local)


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)
