"""Helpers the sweep tests share: waiting for a condition, finding the sweep's parent run."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll `predicate` every 50 ms until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sweep_id_of(store) -> str | None:
    """The id of the (one) sweep parent run in the store, or None yet."""
    from mlkit.sweep.results import is_sweep

    runs, _ = store.search_runs(None, "")
    ids = [r.info.run_id for r in runs if is_sweep(r)]
    return ids[0] if ids else None
