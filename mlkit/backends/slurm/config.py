"""`--backend-config` and the site's defaults, turned into sbatch options (pure: no Slurm needed).

`--backend-config` takes `key=value,key=value` or the path of a JSON file holding one object (as
`mlflow run --backend-config` does). Site defaults come from a YAML file (a mapping of the same keys),
the first found of MLKIT_SLURM_CONFIG, $XDG_CONFIG_HOME/mlkit/slurm.yaml (~/.config/mlkit/slurm.yaml)
and /etc/mlkit/slurm.yaml; `--backend-config` overrides them key by key. Unknown keys are refused
with the list of known ones.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit.backends.slurm.script import UNQUOTABLE, quoted
from mlkit.errors import UsageError

# key -> (sbatch option, kind). kind: "value" passes a checked value, "flag" a boolean switch,
# "time" a duration (4h, 90m, or Slurm's own 1-00:00:00), "memory" a size (20G, 512MiB).
SBATCH_KEYS: dict[str, tuple[str, str]] = {
    "partition": ("--partition", "value"),
    "time": ("--time", "time"),
    "account": ("--account", "value"),
    "qos": ("--qos", "value"),
    "mem": ("--mem", "memory"),
    "mem-per-cpu": ("--mem-per-cpu", "memory"),
    "mem-per-gpu": ("--mem-per-gpu", "memory"),
    "cpus-per-task": ("--cpus-per-task", "count"),
    "cpus-per-gpu": ("--cpus-per-gpu", "count"),
    "constraint": ("--constraint", "value"),
    "exclusive": ("--exclusive", "flag"),
    "nodelist": ("--nodelist", "value"),
    "exclude": ("--exclude", "value"),
    "reservation": ("--reservation", "value"),
    "gres": ("--gres", "value"),
    "gpu-type": ("", "value"),  # folded into the GPU request: --gpus=TYPE:N
    "job-name": ("--job-name", "value"),
    "comment": ("--comment", "value"),
    "begin": ("--begin", "value"),
    "nice": ("--nice", "count"),
    "dependency": ("--dependency", "value"),
}
# mlkit's own keys (not sbatch options)
MLKIT_KEYS = {
    "requeue": "resubmit on preemption/node failure and resume the run (default true)",
    "signal-grace": "seconds before the time limit that USR2 asks the run to checkpoint (default 120)",
    "setup": "shell lines the batch script runs first (e.g. module load cuda/12)",
    "rdzv-port": "torchrun rendezvous port on the first node with --nodes (default 29400)",
    "mlkit-python": "the python that runs mlkit on the nodes (default: the submitting one)",
}
KNOWN_KEYS = sorted([*SBATCH_KEYS, *MLKIT_KEYS])
_ALIASES = {k.replace("-", "_"): k for k in KNOWN_KEYS}
_SWITCHES = {k for k, (_flag, kind) in SBATCH_KEYS.items() if kind == "flag"} | {"requeue"}
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:=/@%+\-\[\]]+")
_SLURM_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+")
SITE_PATHS_HELP = "MLKIT_SLURM_CONFIG, ~/.config/mlkit/slurm.yaml, /etc/mlkit/slurm.yaml"


@dataclass(frozen=True)
class SlurmConfig:
    """The sbatch options and mlkit's own settings for one submission."""

    options: dict[str, str] = field(default_factory=dict)  # key -> checked value ("" for a flag)
    requeue: bool = True
    signal_grace: int = 120
    setup: tuple[str, ...] = ()
    rdzv_port: int = 29400
    python: str | None = None
    sources: tuple[str, ...] = ()  # where the values came from, for messages

    def sbatch_args(self) -> list[str]:
        """The options as `--name=value` arguments, in KNOWN_KEYS order (stable scripts)."""
        args = []
        for key in sorted(self.options):
            flag, kind = SBATCH_KEYS[key]
            if not flag:
                continue
            if kind == "flag":
                args.append(flag)
            else:  # a comment may hold spaces: one quoted word (its value was checked for quotes)
                args.append(f"{flag}={quoted(self.options[key])}")
        return args


def site_config_path() -> Path | None:
    """The site/user default file in force, if any (MLKIT_SLURM_CONFIG names one that must exist)."""
    named = os.environ.get("MLKIT_SLURM_CONFIG")
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path(base) / "mlkit" / "slurm.yaml", Path("/etc/mlkit/slurm.yaml")):
        if candidate.is_file():
            return candidate
    return None


def parse_backend_config(text: str | None) -> dict[str, Any]:
    """`--backend-config`: `k=v,k=v` pairs, or the path of a JSON file with one object."""
    if not text:
        return {}
    stripped = text.strip()
    if stripped.startswith("{"):
        return _json_object(stripped, "--backend-config")
    path = Path(stripped).expanduser()
    first = stripped.split(",")[0].strip()
    pairs_text = "=" in stripped or first in KNOWN_KEYS or first in _ALIASES  # a bare `exclusive`
    if not pairs_text or path.is_file():
        if not path.is_file():
            raise UsageError(
                f"--backend-config {_shown(text)}: neither key=value pairs nor a JSON file",
                hint="e.g. --backend-config partition=gpu,time=4h or --backend-config slurm.json",
            )
        try:
            return _json_object(path.read_text(), f"--backend-config {path}")
        except OSError as exc:
            raise UsageError(f"--backend-config {path}: cannot read it ({exc.strerror})") from None
    pairs: dict[str, Any] = {}
    for item in stripped.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            name = key.strip()
            if name in KNOWN_KEYS or name in _ALIASES:
                if _ALIASES.get(name.replace("-", "_")) not in _SWITCHES:
                    raise UsageError(
                        f"--backend-config {_shown(name)}: {name} needs a value",
                        hint=f"e.g. --backend-config {name}=VALUE (only {', '.join(sorted(_SWITCHES))} stand alone)",
                    )
                pairs[name] = True  # a bare switch: exclusive
                continue
            if pairs:  # a comma inside a value: nodelist=n1,n2
                last = next(reversed(pairs))
                pairs[last] = f"{pairs[last]},{item.strip()}"
                continue
            raise UsageError(
                f"--backend-config {_shown(item)}: expected KEY=VALUE",
                hint="e.g. --backend-config partition=gpu,time=4h,account=ml",
            )
        pairs[key.strip()] = value.strip()
    return pairs


def _json_object(text: str, origin: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{origin}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UsageError(
            f"{origin}: expected a JSON object of sbatch options", hint='e.g. {"partition": "gpu"}'
        )
    return data


def load_site_config() -> tuple[dict[str, Any], str | None]:
    """The site/user defaults (empty without a file) and the file's name."""
    path = site_config_path()
    if path is None:
        return {}, None
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise UsageError(
            f"MLKIT_SLURM_CONFIG={path}: {what}", hint="point it at a YAML file of sbatch options"
        )
    # import budget: the YAML loader loads only when a site config exists
    from mlkit.yamlsafe import load_yaml

    data = load_yaml(path, str(path), UsageError) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of sbatch options", hint="see docs/slurm.md")
    section = data.get("slurm", data)
    if not isinstance(section, dict):
        raise UsageError(f"{path}: `slurm:` must be a mapping of sbatch options", hint="see docs/slurm.md")
    return dict(section), str(path)


def resolve_config(backend_config: str | Mapping[str, Any] | None, *, site: bool = True) -> SlurmConfig:
    """The site file overlaid with `--backend-config`, every key and value checked."""
    merged: dict[str, tuple[Any, str]] = {}
    sources: list[str] = []
    if site:
        defaults, origin = load_site_config()
        if origin:
            sources.append(origin)
            merged.update({k: (v, origin) for k, v in defaults.items()})
    given = backend_config if isinstance(backend_config, Mapping) else parse_backend_config(backend_config)
    if given:
        sources.append("--backend-config")
        merged.update({k: (v, "--backend-config") for k, v in given.items()})
    options: dict[str, str] = {}
    extra: dict[str, Any] = {}
    where: dict[str, str] = {}  # key -> where its value came from (the site file or the flag)
    for raw_key, (value, origin) in merged.items():
        key = _ALIASES.get(str(raw_key).replace("-", "_"))
        if key is None:
            raise UsageError(
                f"{origin}: unknown key {_shown(raw_key)}",
                hint=f"known keys: {', '.join(KNOWN_KEYS)}",
            )
        where[key] = origin
        if key in MLKIT_KEYS:
            extra[key] = value
            continue
        checked = _check(key, value, origin)
        if checked is not None:
            options[key] = checked
    grace = _int(extra.get("signal-grace", 120), "signal-grace", 0, origin=where.get("signal-grace"))
    limit = slurm_seconds(options["time"]) if "time" in options else None
    if grace and limit and grace >= limit:  # 0: Slurm's `no limit`
        note = "" if "signal-grace" in extra else " (the default)"
        origins = " and ".join(dict.fromkeys([where["time"], where.get("signal-grace", where["time"])]))
        raise UsageError(
            f"{origins}: signal-grace={grace}{note} is not shorter than time={options['time']} "
            f"({limit} s): USR2 would come at the start and the job would requeue forever",
            hint=f"give a longer time, or signal-grace={limit // 2} (0: no signal)",
        )
    python = extra.get("mlkit-python")
    return SlurmConfig(
        options=options,
        requeue=_bool(extra.get("requeue", True), "requeue", origin=where.get("requeue")),
        signal_grace=grace,
        setup=_lines(extra.get("setup"), where.get("setup")),
        rdzv_port=_int(extra.get("rdzv-port", 29400), "rdzv-port", 1, 65535, origin=where.get("rdzv-port")),
        python=_interpreter(python) if python else None,
        sources=tuple(sources),
    )


def _interpreter(value: Any) -> str:
    """`mlkit-python`: `~` expanded, and a relative path (`venv/bin/python`) made absolute against the
    directory of the submission (the job starts mlkit from its own directory); a bare name
    (`python3`) stays a PATH lookup on the node."""
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() or "/" not in str(path) else Path.cwd() / path)


def slurm_seconds(text: str) -> int | None:
    """Seconds in a Slurm time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`);
    None for `UNLIMITED` or a form this does not read."""
    days, dash, rest = text.partition("-")
    if not dash:
        days, rest = "0", text
    parts = rest.split(":")
    if not days.isdigit() or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    numbers = [int(p) for p in parts]
    if dash:  # D-HH[:MM[:SS]]
        h, m, sec = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:
        h, m, sec = numbers
    else:  # MM[:SS]
        h, m, sec = 0, numbers[0], numbers[1] if len(numbers) > 1 else 0
    return ((int(days) * 24 + h) * 60 + m) * 60 + sec


def _check(key: str, value: Any, origin: str) -> str | None:
    """The sbatch value for `key` (None: a switch turned off)."""
    _flag, kind = SBATCH_KEYS[key]
    if kind == "flag":
        return "" if _bool(value, key, origin=origin) else None
    if isinstance(value, bool) or value is None:
        raise UsageError(f"{origin}: {key} needs a value, not {_shown(value)}", hint=f"e.g. {key}=VALUE")
    text = str(value).strip()
    if kind == "time":
        return slurm_time(text, origin)
    if kind == "memory":
        return slurm_memory(text, origin, key)
    if kind == "count":
        return str(_int(text, key, 0 if key == "nice" else 1, origin=origin))
    if key == "comment":
        if not text or any(c in text for c in UNQUOTABLE):
            raise UsageError(
                f"{origin}: comment={_shown(text)}: one line without quotes, '#' or '\\'",
                hint="sbatch reads the comment from the script's #SBATCH line, which cannot hold them",
            )
        return text
    if not text or not _SAFE_VALUE.fullmatch(text):
        raise UsageError(
            f"{origin}: {key}={_shown(text)} is not a plain Slurm name",
            hint="letters, digits and . _ - , : = / @ % + [ ] only",
        )
    return text


def slurm_time(text: str, origin: str = "--backend-config") -> str:
    """A time limit for sbatch: `4h`/`90m`/`45s` (mlkit's durations) or Slurm's own form
    (`UNLIMITED`/`INFINITE`, and `0`: no limit)."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return "UNLIMITED"
    if _SLURM_TIME.fullmatch(text):
        return text
    # import budget: units loads only when a time is converted
    from mlkit.units import parse_duration

    seconds = parse_duration(text, flag=f"{origin}: time")
    if math.isinf(seconds) or seconds <= 0:
        raise UsageError(f"{origin}: time={_shown(text)}: give a limit", hint="e.g. time=4h, time=1-00:00:00")
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def slurm_memory(text: str, origin: str = "--backend-config", key: str = "mem") -> str:
    """A size for sbatch in MiB (`20G` and `20GiB` are binary, as Slurm reads them; `0` = all)."""
    if re.fullmatch(r"\d+", text):
        return text  # Slurm's unit: MiB
    match = re.fullmatch(r"(\d+)([KMGT])", text, re.IGNORECASE)
    if match:
        return f"{match.group(1)}{match.group(2).upper()}"
    # import budget: units loads only when a size is converted
    from mlkit.units import parse_memory

    size = parse_memory(text, flag=f"{origin}: {key}")
    return f"{max(1, math.ceil(size / 2**20))}M"


def _shown(value: Any) -> str:
    """A value as an error message shows it: its repr, clipped so no message grows with the input."""
    # import budget: the project model is loaded already by `mlkit run` and `mlkit sweep`
    from mlkit.project.model import clip

    return clip(repr(value))


def _bool(value: Any, key: str, *, origin: str | None = None) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{origin or '--backend-config'}: {key}={_shown(value)}: expected true or false")


def _int(value: Any, key: str, low: int, high: int | None = None, *, origin: str | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        upper = f" to {high}" if high is not None else " or more"
        raise UsageError(
            f"{origin or '--backend-config'}: {key}={_shown(value)}: expected a whole number {low}{upper}"
        )
    return number


def _lines(value: Any, origin: str | None = None) -> tuple[str, ...]:
    """`setup`: shell lines, as one string or a list of strings (a null item or a mapping is refused:
    it would be written into the batch script as `None` or `{...}`)."""
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, str) for v in items) or any("\0" in v for v in items):
        raise UsageError(
            f"{origin or '--backend-config'}: setup={_shown(value)}: expected shell lines (a string or a list of strings)",
            hint='e.g. setup: ["module load cuda/12"] (quote a line YAML would read as a number or null)',
        )
    return tuple(line for v in items for line in v.splitlines())
