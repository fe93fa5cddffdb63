"""Environments: read conda.yaml / python_env.yaml, build or reuse an env, lockfiles.

`prepare_env` and `env_hash` are the contract with the runner (docs/internals.md); see
docs/environments.md for the managers, the cache and lockfiles (`lockfile` reads and writes
conda-lock.yml, `solve` makes one). rattler is imported only by the functions that need it, and
by `solve`, which only `mlkit env lock` loads; docs/internals.md has the module map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlkit._lazy import lazy_exports

_EXPORTS = {
    "MANAGERS": "mlkit.env.manager",
    "PreparedEnv": "mlkit.env.manager",
    "env_hash": "mlkit.env.manager",
    "prepare_env": "mlkit.env.manager",
    "EnvRef": "mlkit.env.ref",
}

# The real names for type checkers (a re-export, so ruff's F401 is off for this file in
# pyproject.toml); at run time __getattr__ below imports each on first use.
if TYPE_CHECKING:
    from mlkit.env.manager import MANAGERS, PreparedEnv, env_hash, prepare_env
    from mlkit.env.ref import EnvRef

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("mlkit.env", _EXPORTS, globals())
