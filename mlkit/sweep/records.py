"""What a sweep keeps in the store: the tags of its parent and trials, its spec artifact, and the
lookups every part shares (the spec, the trial runs, whether a trial was pruned)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlkit.errors import MlkitError, UsageError

SPEC_FILE = "sweep/spec.json"
STUDY_FILE = "sweep/study.journal"
CLAIM_LOCK = "sweep/claim.lock"
PARENT_TAG = "mlflow.parentRunId"
TAG_METHOD, TAG_SPACE, TAG_METRIC, TAG_DIRECTION, TAG_TRIALS = (
    "mlkit.sweep.method", "mlkit.sweep.space", "mlkit.sweep.metric", "mlkit.sweep.direction", "mlkit.sweep.trials",
)  # fmt: skip
TAG_KEY, TAG_SLOT, TAG_OPTUNA, TAG_DRIVER, TAG_PRUNED = (
    "mlkit.sweep.trial_key", "mlkit.sweep.slot", "mlkit.sweep.optuna_trial", "mlkit.sweep.driver",
    "mlkit.sweep.pruned_at",
)  # fmt: skip
FAILURE_TAG = "mlkit.failure_reason"
SLURM_JOB_TAG = "mlkit.slurm.job_id"  # mlkit.backends.slurm.JOB_ID_TAG


def load_spec(store: Any, sweep_id: str) -> dict[str, Any]:
    """The spec a sweep was created with; UsageError when `sweep_id` is not a sweep."""
    path = Path(store.artifact_dir(sweep_id)) / SPEC_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"run {sweep_id} is not a sweep (it has no {SPEC_FILE})",
                         hint="pass the id of a sweep's parent run (mlkit runs list shows them)") from None  # fmt: skip
    except (OSError, ValueError) as exc:
        raise MlkitError(f"{path}: cannot read: {exc}", hint="the sweep's spec is damaged") from exc


def trial_runs(store: Any, sweep_id: str) -> list[Any]:
    """Every run whose `mlflow.parentRunId` is `sweep_id`, oldest first."""
    exp_id = store.get_run(sweep_id).info.experiment_id
    runs: list[Any] = []
    token = None
    while True:
        page, token = store.search_runs(
            [exp_id], f"tags.`{PARENT_TAG}` = '{sweep_id}'", order_by=["attributes.start_time ASC"],
            max_results=1000, page_token=token,
        )  # fmt: skip
        runs.extend(page)
        if not token:
            return runs


def is_pruned(run: Any) -> bool:
    tags = run.data.tags
    return run.info.status == "KILLED" and (tags.get(FAILURE_TAG) == "pruned" or TAG_PRUNED in tags)
