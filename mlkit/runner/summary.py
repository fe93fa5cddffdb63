"""The closing summary of `mlkit run`: the run's key metrics, the models it logged and the commands
to run next, read from the store after the run ended."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mlkit.errors import MlkitError
from mlkit.runner.supervise import RunResult


def closing_summary(store_root: Path, result: RunResult, project_name: str | None = None) -> dict[str, Any]:
    """What the end of `mlkit run` shows besides the status: the final value of the run's key
    metrics (model metrics, validation/test first, at most 8), the URIs of the models it logged,
    and the commands to run next. Read from the store after the run ended (only on a terminal or
    with --json, so a plain run never loads the column rules)."""

    # import budget: the column rules and the store load only when a summary is shown
    from mlkit.tracking.columns import is_model_metric, metric_order
    from mlkit.tracking.store import FileStore

    run_id = result.run_id
    metrics: dict[str, float] = {}
    models: list[str] = []
    with contextlib.suppress(MlkitError, OSError, ValueError):
        run = FileStore(store_root).get_run(run_id)
        keys = sorted((k for k in run.data.metrics if is_model_metric(k)), key=metric_order)[:8]
        metrics = {k: run.data.metrics[k] for k in keys}
        history = json.loads(run.data.tags.get("mlflow.log-model.history") or "[]")  # models.format
        paths = (
            [e.get("artifact_path") for e in history if isinstance(e, dict)]
            if isinstance(history, list)
            else []
        )
        models = [f"runs:/{run_id}/{p}" for p in dict.fromkeys(paths) if p]
    next_commands = [f"mlkit runs show {run_id}"]
    if result.status != "FINISHED":
        next_commands.append(f"mlkit runs logs {run_id}")
    elif models:
        next_commands.append(f"mlkit models register {models[-1]} {project_name or 'NAME'}")
    return {
        "metrics": metrics,
        "model_uri": models[-1] if models else None,
        "models": models,
        "next": next_commands,
    }
