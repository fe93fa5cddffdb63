"""The one YAML reader for MLproject, conda.yaml and python_env.yaml: safe, and bounded.

A hostile file fails fast and small, with one line naming the file (and the key where there is one):

- only a regular file of at most `MAX_BYTES` is read (not a FIFO, not /dev/zero);
- the bytes must be UTF-8 without NUL bytes;
- nesting is at most `MAX_DEPTH` levels, checked on the parser's event stream before any tree is
  built (the C parser is used where PyYAML has it);
- aliases are counted by what they expand to: the document, with every alias expanded, may hold at
  most `MAX_NODES` nodes (a "billion laughs" file is refused in milliseconds), and an alias may not
  contain itself;
- every mapping key is a string (`.nan: x`, `1: x` or `[a]: b` are refused with the key's path).

A simple file (the block-YAML subset of `mlkit.yamlfast`, which the usual MLproject and
conda.yaml keep to) is read without PyYAML, with exactly PyYAML's result and within these limits;
anything else goes through PyYAML as below. `yaml` is imported inside `loads` only: `import mlkit` must stay light.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mlkit import yamlfast
from mlkit.errors import MlkitError

MAX_BYTES = 1 << 20  # 1 MiB: a real MLproject or conda.yaml is a few KiB
MAX_DEPTH = 64
MAX_NODES = 100_000  # nodes after expanding every alias


def read_bounded(path: Path, label: str, error: type[MlkitError], limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or `error` with one line."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise error(
            f"{label}: cannot be read: {_reason(exc)}", hint="check the path and its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{label}: not a regular file", hint="point to a plain file, not a device, FIFO or folder"
            )
        if info.st_size > limit:
            raise error(
                f"{label}: the file is {info.st_size} bytes, more than the {limit} allowed",
                hint="this file is far larger than any real one: check that it is the right file",
            )
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise error(
                f"{label}: the file is more than {limit} bytes", hint="check that it is the right file"
            )
        return b"".join(chunks)
    except OSError as exc:
        raise error(
            f"{label}: cannot be read: {_reason(exc)}", hint="check the path and its permissions"
        ) from None
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def decode_text(data: bytes, label: str, error: type[MlkitError]) -> str:
    """`data` as UTF-8 text without NUL bytes, or `error` naming the line."""
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise error(f"{label}: line {line}: the file contains a NUL byte", hint="save it as UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"{label}: line {line}: byte {data[exc.start]:#04x} is not UTF-8",
            hint="save the file as UTF-8",
        ) from None


def load_yaml(
    path: Path,
    label: str,
    error: type[MlkitError],
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    string_keys: bool = True,
) -> object:
    """The YAML document in `path`, read within the limits above; `error(one line)` otherwise.
    A file that is bigger by nature (a conda-lock.yml) gives its own `max_bytes` and `max_nodes`;
    one written by other tools whose keys may be numbers gives `string_keys=False`."""
    text = decode_text(read_bounded(path, label, error, max_bytes), label, error)
    return loads(text, label, error, max_nodes=max_nodes, string_keys=string_keys)


def loads(
    text: str, label: str, error: type[MlkitError], *, max_nodes: int = MAX_NODES, string_keys: bool = True
) -> object:
    fast = yamlfast.load(text)  # the usual simple file, read without importing PyYAML (issue 20)
    if fast is not None:
        return fast
    # import budget: yaml loads only for a file the fast reader leaves; import mlkit stays without it
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_events(yaml, text, loader_cls, label, error, max_nodes)
        loader = loader_cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(yaml, node, label, error, max_nodes)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise error(f"{label}: {yaml_problem(exc)}", hint=_HINT) from None
    except RecursionError:
        raise error(f"{label}: the document is nested too deeply", hint=_HINT) from None
    if string_keys:
        _check_keys(data, label, error)
    return data


_HINT = "fix the YAML at that line (indent with spaces, quote values that contain ': ' or '#')"


def yaml_problem(exc: BaseException) -> str:
    """`line N, column M: invalid YAML: problem (context)`, N being the line to fix.

    PyYAML marks where it gave up, which for a key without its `:` or a quote left open is the
    next line (or the end of the file); the scanner's context mark is the line that is wrong."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        if context in _STARTS_THE_PROBLEM:
            mark, context = context_mark, f"{context}; PyYAML stopped at line {mark.line + 1}"
        elif context:
            context = f"{context} that starts at line {context_mark.line + 1}"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if "maximum nesting depth" in problem:  # PyYAML >= 6.0.4 has a limit of its own: say it as ours
        return f"{where}nested more than {MAX_DEPTH} levels deep"
    return f"{where}invalid YAML: {problem}" + (f" ({context})" if context else "")


# Scanner contexts whose start is the mistake: a key missing its `:`, an unclosed quote.
_STARTS_THE_PROBLEM = (
    "while scanning a simple key",
    "while scanning a quoted scalar",
    "while scanning an anchor",
    "while scanning an alias",
    "while scanning a tag",
)


def _check_events(yaml, text: str, loader_cls, label: str, error: type[MlkitError], max_nodes: int) -> None:
    """Nesting depth and a first bound on aliases, from the event stream (no tree is built)."""
    depth = 0
    aliases = 0
    for event in yaml.parse(text, Loader=loader_cls):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise error(
                    f"{label}: line {line}: nested more than {MAX_DEPTH} levels deep",
                    hint="a real file is a few levels deep: check that it is the right file",
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > max_nodes:
                raise error(f"{label}: more than {max_nodes} aliases (*name)", hint="expand them by hand")


def _check_nodes(yaml, root, label: str, error: type[MlkitError], max_nodes: int) -> None:
    """The size of the document with every alias expanded, computed once per shared node."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise error(f"{label}: line {line}: an alias refers to a node that contains it", hint=_HINT)
        total = 1
        if isinstance(node, yaml.MappingNode):
            open_ids.add(key)
            for k, v in node.value:
                total += size(k) + size(v)
                if total > max_nodes:
                    break
            open_ids.discard(key)
        elif isinstance(node, yaml.SequenceNode):
            open_ids.add(key)
            for item in node.value:
                total += size(item)
                if total > max_nodes:
                    break
            open_ids.discard(key)
        sizes[key] = total
        if total > max_nodes:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise error(
                f"{label}: line {line}: with its aliases (*name) expanded the document has more than "
                f"{max_nodes} values (an alias bomb?)",
                hint="write the values out instead of nesting aliases",
            )
        return total

    size(root)


def _check_keys(data: object, label: str, error: type[MlkitError]) -> None:
    """Every mapping key is a string; the first one that is not is named by its path."""
    stack: list[tuple[object, str]] = [(data, "")]
    seen: set[int] = set()
    while stack:
        value, where = stack.pop()
        if isinstance(value, (dict, list)):
            if id(value) in seen:
                continue
            seen.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    shown = repr(k) if not isinstance(k, (list, tuple, dict)) else type(k).__name__
                    path = f"{where}." if where else ""
                    raise error(
                        f"{label}: {path}{shown}: keys must be strings, not {type(k).__name__}",
                        hint=f'quote the key: "{k}":'
                        if isinstance(k, (int, float, bool)) or k is None
                        else _HINT,
                    )
                shown_key = k.encode("unicode_escape").decode("ascii")[:80]
                stack.append((v, f"{where}.{shown_key}" if where else shown_key))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
