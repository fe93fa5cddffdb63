"""Deploy and roll back by moving an alias: the server follows the registry under load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve.serve_helpers import call, invoke, log_first_pixel, row

pytestmark = [pytest.mark.serve, pytest.mark.torch]


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _version(server) -> int:
    return call(server.url, path="/v1/model").json()["version"]


def test_alias_move_under_load_fails_no_request(torch_ok, serve_cli, registry):
    log_first_pixel("digits", shift=0)  # v1 answers the first pixel
    log_first_pixel("digits", shift=5)  # v2 answers it + 5 (mod 10)
    registry.set_alias("digits", "champion", 1)
    server = serve_cli("models:/digits@champion", "--poll-interval", "0.2")
    assert _version(server) == 1

    answers: list[tuple[int, int, object]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 400:  # bounded
            first = (worker + n) % 10
            a = invoke(server.url, {"inputs": [row(first)]})
            answers.append((first, a.status, a.json().get("predictions") if a.status == 200 else a.body))
            n += 1

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, w) for w in range(8)]
        time.sleep(0.5)
        registry.set_alias("digits", "champion", 2)  # deploy
        assert _wait_for(lambda: _version(server) == 2)
        time.sleep(0.3)
        registry.set_alias("digits", "champion", 1)  # roll back
        assert _wait_for(lambda: _version(server) == 1)
        time.sleep(0.3)
        stop.set()
        for f in futures:
            f.result()

    assert len(answers) > 50
    failed = [a for a in answers if a[1] != 200]
    assert failed == []
    versions = set()
    for first, _, predictions in answers:
        assert predictions in ([first], [(first + 5) % 10])  # from the old or the new version, nothing else
        versions.add(1 if predictions == [first] else 2)
    assert versions == {1, 2}

    history = [e for e in registry.history("digits") if e.what == "serve_swap"]
    assert [(e.from_, e.to) for e in history] == [("1", "2"), ("2", "1")]
    assert all(e.details["serving_run"] == server.info["run_id"] for e in history)
    metrics = call(server.url, path="/metrics").body.decode()
    assert "mlkit_serve_swaps_total 2.0" in metrics
    assert "mlkit_serve_model_version 1.0" in metrics
    assert server.stop() == 0


def test_broken_version_is_not_swapped_in(torch_ok, serve_cli, registry):
    log_first_pixel("digits", shift=0)
    broken = log_first_pixel("digits", shift=5)
    weights = broken.path / "data" / "state_dict.pt"
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")  # fails the weights hash check
    registry.set_alias("digits", "champion", 1)
    server = serve_cli("models:/digits@champion", "--poll-interval", "0.2")

    registry.set_alias("digits", "champion", 2)
    metrics_text = lambda: call(server.url, path="/metrics").body.decode()  # noqa: E731
    assert _wait_for(lambda: "mlkit_serve_reload_failures_total 1.0" in metrics_text())
    assert _version(server) == 1
    assert invoke(server.url, {"inputs": [row(3)]}).json() == {"predictions": [3]}  # v1 still answers
    assert call(server.url, path="/health").status == 200
    failures = [e for e in registry.history("digits") if e.what == "serve_reload_failed"]
    assert len(failures) == 1 and "version 2" in failures[0].details["why"]
    assert server.stop() == 0
    assert "failed to load or warm up, not swapped in" in server.stderr


def test_stage_uri_follows_transitions(torch_ok, serve_cli, registry):
    log_first_pixel("digits", shift=0)
    log_first_pixel("digits", shift=5)
    registry.transition_model_version_stage("digits", 1, "Production")
    server = serve_cli("models:/digits/Production", "--poll-interval", "0.2")
    assert invoke(server.url, {"inputs": [row(2)]}).json() == {"predictions": [2]}
    registry.transition_model_version_stage("digits", 2, "Production", archive_existing=True)
    assert _wait_for(lambda: _version(server) == 2)
    assert invoke(server.url, {"inputs": [row(2)]}).json() == {"predictions": [7]}
    assert server.stop() == 0


def test_fixed_version_is_not_followed(torch_ok, serve_cli, registry):
    log_first_pixel("digits", shift=0)
    log_first_pixel("digits", shift=5)
    server = serve_cli("models:/digits/1", "--poll-interval", "0.1")
    info = call(server.url, path="/v1/model").json()
    assert (info["name"], info["version"], info["follows"]) == ("digits", 1, False)
    registry.set_alias("digits", "champion", 2)
    time.sleep(0.5)
    assert _version(server) == 1
    assert server.stop() == 0


def test_without_room_for_two_versions_the_old_one_is_unloaded_first(
    torch_ok, registry, store_root, monkeypatch
):
    # On a GPU whose free memory cannot hold both versions, the swap is unload-then-load: no
    # version is current while the new one loads (/health and /invocations answer 503), and a new
    # version that fails to load brings the old one back. The room check is the only GPU part.
    import numpy as np

    from mlkit.serve import holder as holder_mod

    log_first_pixel("digits", shift=0)
    log_first_pixel("digits", shift=5)
    broken = log_first_pixel("digits", shift=7)
    weights = broken.path / "data" / "state_dict.pt"
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    registry.set_alias("digits", "champion", 1)
    failures: list[str] = []
    held = holder_mod.ModelHolder(
        "models:/digits@champion", root=store_root, device="cpu", on_failure=failures.append
    )
    held.load_initial()
    monkeypatch.setattr(held, "_room_for_both", lambda path: False)
    current_while_loading: list[object] = []
    real_load = holder_mod.load_version

    def spying_load(resolved, device):
        current_while_loading.append(held.current)
        return real_load(resolved, device)

    monkeypatch.setattr(holder_mod, "load_version", spying_load)
    first = np.array([row(3)], dtype=np.float32)

    registry.set_alias("digits", "champion", 2)
    assert held.check() is True
    assert current_while_loading == [None]  # unloaded before the new one loaded: the 503 window
    assert held.current.version == 2 and list(held.current.predict(first)) == [8]

    current_while_loading.clear()
    registry.set_alias("digits", "champion", 3)  # broken weights: fails to load
    assert held.check() is False
    assert current_while_loading[0] is None  # v2 was unloaded first ...
    assert held.current.version == 2 and list(held.current.predict(first)) == [8]  # ... and came back
    assert len(failures) == 1 and "version 3" in failures[0]

    registry.set_alias("digits", "champion", 2)  # rolled back to the version served ...
    assert held.check() is False
    registry.set_alias("digits", "champion", 3)  # ... then v3 again (fixed since): it is tried again
    assert held.check() is False and len(failures) == 2

    def failing_load(resolved, device):  # neither v3 nor v2 loads now (say, the GPU is full)
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(holder_mod, "load_version", failing_load)
    registry.set_alias("digits", "champion", 1)
    assert held.check() is False
    assert held.current is None  # nothing is served (503) until the alias moves ...
    assert (
        "version 2 could not be loaded again: RuntimeError: CUDA out of memory" in failures[-1]
    )  # ... and it says so
