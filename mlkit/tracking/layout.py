"""The names of the store's directories, as MLflow's FileStore lays them out on disk.

`<root>/<experiment_id>/<run_id>/`, deleted experiments under `<root>/.trash/`; the root and each
experiment directory also hold directories that are neither experiments nor runs (reserved).
Every tracking module takes these names from here, so none needs the store to know them.
"""

from __future__ import annotations

DEFAULT_EXPERIMENT_ID = "0"
TRASH = ".trash"
RESERVED_ROOT_DIRS = frozenset({TRASH, "models"})  # at the root: not experiments
RESERVED_EXPERIMENT_DIRS = frozenset({"tags", "datasets", "traces", "models"})  # in one: not runs
