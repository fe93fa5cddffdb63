"""Which environment file a project names (the MLproject's `conda_env` / `python_env` / `docker_env`),
and how long the hashes that name environments are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EnvKind = Literal["conda", "python", "docker"]
# hex characters of sha256 kept in env hashes (spec and lockfile): short paths keep shebang lines short
HASH_LEN = 16


@dataclass(frozen=True)
class EnvRef:
    """The environment a project asks for; `None` in Project.env means "no environment file"."""

    kind: EnvKind
    path: Path | None = None  # conda.yaml / python_env.yaml, absolute; None for docker
    image: str | None = None  # docker_env.image
    docker: dict | None = None  # the whole docker_env mapping, reported but never run
