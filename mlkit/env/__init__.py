"""Environments: read conda.yaml / python_env.yaml, build or reuse an env, lockfiles.

`prepare_env` and `env_hash` are the contract with the runner (docs/internals.md); see
docs/environments.md for the managers, the cache and lockfiles. rattler and conda_lock are
imported only inside the functions that need them.
"""

from __future__ import annotations

from mlkit._lazy import lazy_exports

_EXPORTS = {
    "MANAGERS": "mlkit.env.manager",
    "PreparedEnv": "mlkit.env.manager",
    "env_hash": "mlkit.env.manager",
    "prepare_env": "mlkit.env.manager",
    "EnvRef": "mlkit.env.ref",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("mlkit.env", _EXPORTS, globals())
