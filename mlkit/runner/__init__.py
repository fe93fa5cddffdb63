"""Running a project: `plan_run` (pure) builds the command, `execute` supervises it.

`run_project` is the whole `mlkit run` sequence (load, validate, lock, store, env, GPUs, launch,
record). Names are resolved lazily so that `mlkit.runner.proc` stays cheap to import.
"""

from __future__ import annotations

from mlkit._lazy import lazy_exports

_EXPORTS = {
    "RunPlan": "mlkit.runner.plan",
    "plan_run": "mlkit.runner.plan",
    "RunResult": "mlkit.runner.supervise",
    "execute": "mlkit.runner.supervise",
    "RunOptions": "mlkit.runner.session",
    "DryRun": "mlkit.runner.session",
    "Skipped": "mlkit.runner.session",
    "run_project": "mlkit.runner.session",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_exports("mlkit.runner", _EXPORTS, globals())
