"""Running a project: `plan_run` (pure) builds the command, `execute` supervises it.

`run_project` is the whole `mlkit run` sequence (load, validate, lock, store, env, GPUs, launch,
record). Names are resolved lazily so that importing one runner module loads no other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlkit._lazy import lazy_exports

_EXPORTS = {
    "RunPlan": "mlkit.runner.plan",
    "plan_run": "mlkit.runner.plan",
    "RunResult": "mlkit.runner.supervise",
    "execute": "mlkit.runner.supervise",
    "RunOptions": "mlkit.runner.options",
    "DryRun": "mlkit.runner.dryrun",
    "Skipped": "mlkit.runner.session",
    "run_project": "mlkit.runner.session",
}

# The real names for type checkers (a re-export, so ruff's F401 is off for this file in
# pyproject.toml); at run time __getattr__ below imports each on first use.
if TYPE_CHECKING:
    from mlkit.runner.dryrun import DryRun
    from mlkit.runner.options import RunOptions
    from mlkit.runner.plan import RunPlan, plan_run
    from mlkit.runner.session import Skipped, run_project
    from mlkit.runner.supervise import RunResult, execute

__all__ = list(_EXPORTS)


__getattr__ = lazy_exports("mlkit.runner", _EXPORTS, globals())
