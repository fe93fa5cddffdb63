"""MlkitClient: MLflow's MlflowClient names over the file store (explicit run ids, no active run)."""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlkit.errors import InvalidInputError
from mlkit.tracking.entities import FINISHED, Experiment, FileInfo, Metric, Run
from mlkit.tracking.search_grammar import like_to_regex, tokenize
from mlkit.tracking.store import FileStore


class MlkitClient:
    """A client bound to one store (tracking_uri: a path or file:// URI; None = the default)."""

    def __init__(self, tracking_uri: str | os.PathLike[str] | None = None) -> None:
        self.store = FileStore(tracking_uri)

    # experiments
    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: dict[str, Any] | None = None
    ) -> str:
        """Create an experiment and return its id."""
        return self.store.create_experiment(name, artifact_location, tags)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment with this id."""
        return self.store.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment with this name, or None."""
        return self.store.get_experiment_by_name(name)

    def list_experiments(self, view_type: str = "active") -> list[Experiment]:
        """Every experiment ('active', 'deleted' or 'all')."""
        return self.store.list_experiments(view_type)

    def search_experiments(
        self, view_type: str = "active", max_results: int | None = None, filter_string: str = "",
        order_by: list[str] | None = None,
    ) -> list[Experiment]:  # fmt: skip
        """Experiments, filtered by `name` (= != LIKE ILIKE), newest first as MLflow orders them."""
        experiments = self.store.list_experiments(view_type)
        if filter_string:
            tokens = tokenize(filter_string)
            if len(tokens) != 3 or tokens[0].text.split(".")[-1] != "name" or tokens[2].kind != "string":
                raise InvalidInputError(
                    f"unsupported experiment filter {filter_string!r}",
                    hint="mlkit supports \"name = 'x'\", \"name != 'x'\", \"name LIKE 'x%'\" and ILIKE",
                )
            op, value = tokens[1].text.upper(), tokens[2].text[1:-1]
            if op in ("LIKE", "ILIKE"):
                rx = re.compile(like_to_regex(value), re.IGNORECASE if op == "ILIKE" else 0)
                experiments = [e for e in experiments if rx.match(e.name)]
            elif op == "=":
                experiments = [e for e in experiments if e.name == value]
            elif op == "!=":
                experiments = [e for e in experiments if e.name != value]
            else:
                raise InvalidInputError(f"unsupported operator {op!r} for name", hint="use = != LIKE ILIKE")
        for clause in reversed(order_by or []):
            field, _, direction = clause.partition(" ")
            field = field.strip()
            if field not in ("name", "experiment_id", "creation_time", "last_update_time"):
                raise InvalidInputError(f"invalid order_by {clause!r}", hint="order by name, experiment_id, "
                                        "creation_time or last_update_time")  # fmt: skip
            experiments.sort(key=functools.partial(_experiment_sort_value, field=field),
                             reverse=direction.strip().upper() == "DESC")  # fmt: skip
        return experiments[:max_results] if max_results else experiments

    def delete_experiment(self, experiment_id: str) -> None:
        """Delete an experiment (moved to .trash)."""
        self.store.delete_experiment(experiment_id)

    def restore_experiment(self, experiment_id: str) -> None:
        """Restore a deleted experiment."""
        self.store.restore_experiment(experiment_id)

    # runs
    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict[str, Any] | None = None,
                   run_name: str | None = None) -> Run:  # fmt: skip
        """Create a RUNNING run."""
        return self.store.create_run(experiment_id, run_name=run_name, tags=tags, start_time=start_time)

    def get_run(self, run_id: str) -> Run:
        """A run by id."""
        return self.store.get_run(run_id)

    def search_runs(
        self, experiment_ids: list[str] | str, filter_string: str = "", run_view_type: str | int = "active",
        max_results: int = 1000, order_by: list[str] | None = None, page_token: str | None = None,
    ) -> list[Run]:  # fmt: skip
        """One page of runs matching an MLflow filter; the next page token is on `.token`."""
        runs, token = self.store.search_runs(experiment_ids, filter_string, order_by, max_results, page_token,
                                             run_view_type)  # fmt: skip
        return PagedList(runs, token)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of a metric, in logging order."""
        return self.store.get_metric_history(run_id, key)

    def log_param(self, run_id: str, key: str, value: Any) -> Any:
        """Log a param."""
        self.store.log_param(run_id, key, value)
        return value

    def log_metric(
        self, run_id: str, key: str, value: float, timestamp: int | None = None, step: int | None = None
    ) -> None:
        """Log a metric value."""
        self.store.log_metric(run_id, key, value, 0 if step is None else step, timestamp)

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: dict[str, Any] | None = None,
                  tags: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Log metrics, params and tags in one call."""
        if params:
            self.store.log_params(run_id, params)
        if tags:
            self.store.set_tags(run_id, tags)
        for m in metrics:
            self.store.log_metric(run_id, m.key, m.value, m.step, m.timestamp)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """Set a tag."""
        self.store.set_tag(run_id, key, value)

    def delete_tag(self, run_id: str, key: str) -> None:
        """Delete a tag."""
        self.store.delete_tag(run_id, key)

    def set_terminated(self, run_id: str, status: str = FINISHED, end_time: int | None = None) -> None:
        """End a run."""
        self.store.set_terminated(run_id, status, end_time)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted."""
        self.store.delete_run(run_id)

    def restore_run(self, run_id: str) -> None:
        """Restore a deleted run."""
        self.store.restore_run(run_id)

    # artifacts
    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a file into the run's artifacts."""
        self.store.log_artifact(run_id, local_path, artifact_path)

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a directory's content into the run's artifacts."""
        self.store.log_artifacts(run_id, local_dir, artifact_path)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """The entries of a run's artifact directory."""
        return self.store.list_artifacts(run_id, path)

    def download_artifacts(self, run_id: str, path: str, dst_path: str | None = None) -> str:
        """The local path of an artifact (copied to dst_path when given)."""
        source = self.store.artifact_file(run_id, path)
        if dst_path is None:
            return str(source)
        target = Path(dst_path) / source.name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return str(target)


def _experiment_sort_value(experiment: Experiment, field: str) -> Any:
    """An experiment's `order_by` key: a missing time sorts as 0."""
    value = getattr(experiment, field)
    return value or 0 if field.endswith("time") else value


class PagedList(list[Any]):
    """A list of results with the token of the next page (None on the last page), as MLflow's."""

    def __init__(self, items: list[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token
