"""Environments: read conda.yaml / python_env.yaml, build or reuse an env, lockfiles.

`prepare_env` and `env_hash` are the contract with the runner (docs/internals.md); see
docs/environments.md for the managers, the cache and lockfiles. rattler and conda_lock are
imported only inside the functions that need them.
"""

from __future__ import annotations

from mlkit.env.manager import MANAGERS, PreparedEnv, env_hash, prepare_env
from mlkit.env.ref import EnvRef

__all__ = ["MANAGERS", "EnvRef", "PreparedEnv", "env_hash", "prepare_env"]
