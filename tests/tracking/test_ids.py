"""Run and experiment ids are MLflow's: a uuid4's hex for a run, the last 18 digits of a uuid4's
integer for an experiment (mlkit makes them without importing uuid, issue 20)."""

from __future__ import annotations

import uuid

from mlkit.tracking.store import FileStore


def test_run_ids_are_version_4_uuids_and_experiment_ids_18_digits(tmp_path):
    store = FileStore(tmp_path / "mlruns")
    exp_ids = {store.create_experiment(f"e{i}") for i in range(20)}
    assert len(exp_ids) == 20
    for exp_id in exp_ids:
        assert exp_id.isdigit() and len(exp_id) == 18 and not exp_id.startswith("0")
    run_ids = {store.create_run(experiment_id=next(iter(exp_ids))).info.run_id for _ in range(50)}
    assert len(run_ids) == 50
    for run_id in run_ids:
        parsed = uuid.UUID(hex=run_id)
        assert parsed.hex == run_id and len(run_id) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
