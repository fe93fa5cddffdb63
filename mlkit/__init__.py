"""mlkit: run MLflow-format projects on your own GPU machines, tracked in a file store.

The tracking API mirrors MLflow's fluent API, so switching is a change of import:

    import mlkit
    with mlkit.start_run(run_name="try-1"):
        mlkit.log_param("lr", 0.01)
        mlkit.log_metric("loss", 0.3, step=1)

Names are resolved lazily so that `import mlkit` stays cheap (no torch, no pynvml, no yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlkit._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # fluent tracking API
    "start_run": "mlkit.tracking.fluent",
    "end_run": "mlkit.tracking.fluent",
    "active_run": "mlkit.tracking.fluent",
    "log_param": "mlkit.tracking.fluent",
    "log_params": "mlkit.tracking.fluent",
    "log_metric": "mlkit.tracking.fluent",
    "log_metrics": "mlkit.tracking.fluent",
    "set_tag": "mlkit.tracking.fluent",
    "set_tags": "mlkit.tracking.fluent",
    "log_artifact": "mlkit.tracking.fluent",
    "log_artifacts": "mlkit.tracking.fluent",
    "log_text": "mlkit.tracking.fluent",
    "log_dict": "mlkit.tracking.fluent",
    "get_artifact_uri": "mlkit.tracking.fluent",
    "set_experiment": "mlkit.tracking.fluent",
    "search_runs": "mlkit.tracking.fluent",
    # client and store
    "MlkitClient": "mlkit.tracking.client",
    "FileStore": "mlkit.tracking.store",
    # models
    "log_model": "mlkit.models",
    "load_model": "mlkit.models",
    # errors
    "MlkitError": "mlkit.errors",
}

# The real names for type checkers (a re-export, so ruff's F401 is off for this file in
# pyproject.toml); at run time __getattr__ below imports each on first use.
if TYPE_CHECKING:
    from mlkit.errors import MlkitError
    from mlkit.models import load_model, log_model
    from mlkit.tracking.client import MlkitClient
    from mlkit.tracking.fluent import (
        active_run,
        end_run,
        get_artifact_uri,
        log_artifact,
        log_artifacts,
        log_dict,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_text,
        search_runs,
        set_experiment,
        set_tag,
        set_tags,
        start_run,
    )
    from mlkit.tracking.store import FileStore

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_exports("mlkit", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
