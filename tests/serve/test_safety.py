"""Safety and operations: token, body limit, request timeout, drain on SIGTERM, loopback by
default, batching that never mixes shapes, the serving record, --workers, bad input creates nothing."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve.serve_helpers import call, invoke, log_first_pixel, row

from helpers import plant_mlkit, run_mlkit

pytestmark = [pytest.mark.serve, pytest.mark.torch]


@pytest.fixture
def model(torch_ok, registry):
    info = log_first_pixel("digits")
    registry.set_alias("digits", "champion", 1)
    return info


def test_bearer_token_required(model, serve_cli, tmp_path):
    token = "s3cret-token-0123456789"
    tok = tmp_path / "tok"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    server = serve_cli("models:/digits@champion", "--token-file", str(tok))
    assert invoke(server.url, {"inputs": [row(1)]}).status == 401
    wrong = invoke(server.url, {"inputs": [row(1)]}, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"
    assert wrong.headers["www-authenticate"] == "Bearer"
    ok = invoke(server.url, {"inputs": [row(1)]}, headers={"Authorization": f"Bearer {token}"})
    assert ok.json() == {"predictions": [1]}
    assert call(server.url, path="/metrics").status == 401
    assert call(server.url, path="/v1/model").status == 401
    assert call(server.url, path="/ping").status == 200  # health checks need no token
    assert server.stop() == 0


def test_token_file_readable_by_all_is_refused(model, mlkit_cli, tmp_path, store_root):
    tok = tmp_path / "tok"
    tok.write_text("s3cret-token-0123456789\n")
    tok.chmod(0o644)
    result = mlkit_cli(
        "models", "serve", "models:/digits@champion", "--token-file", str(tok), "--gpus", "none"
    )
    assert result.returncode == 2
    assert "anyone on this machine can read it" in result.stderr and "chmod 600" in result.stderr
    runs = list((store_root / "0").glob("*/meta.yaml"))
    assert len(runs) == 1  # only the model's own run: no serving run was created


def test_a_model_failing_its_warm_up_is_one_line_and_its_serving_run_ends(model, mlkit_cli, store_root):
    (model.path / "input_example.json").write_text('{"inputs": [[1.0, 2.0]]}')  # not the 64-pixel input
    result = mlkit_cli("models", "serve", "models:/digits@champion", "--gpus", "none", "--port", "0")
    assert result.returncode == 1, result.stderr
    assert "cannot load or warm up" in result.stderr and "Traceback" not in result.stderr
    from mlkit.tracking.store import FileStore

    runs, _ = FileStore(store_root).search_runs(None, "tags.`mlkit.kind` = 'serving'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_port_that_is_taken_is_exit_2_and_leaves_no_serving_run(model, mlkit_cli, store_root):
    """Exit 2 is a usage error, and those create nothing (docs/exit-codes.md): the address is tried
    before the serving run exists (it used to be left FAILED), with one worker or several."""
    import socket

    from mlkit.tracking.store import FileStore

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    try:
        for workers in ("1", "2"):
            result = mlkit_cli(
                "models",
                "serve",
                "models:/digits@champion",
                "--gpus",
                "none",
                "--port",
                port,
                "--workers",
                workers,
            )
            assert result.returncode == 2, result.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    finally:
        taken.close()
    runs, _ = FileStore(store_root).search_runs(None, "tags.`mlkit.kind` = 'serving'")
    assert runs == []


def test_token_file_readable_by_its_group_or_not_text_is_refused(model, mlkit_cli, tmp_path):
    token = tmp_path / "tok"
    token.write_text("secret\n")
    token.chmod(0o640)
    grouped = mlkit_cli("models", "serve", "models:/digits@champion", "--token-file", str(token))
    assert grouped.returncode == 2 and "its group can read it" in grouped.stderr
    token.write_bytes(b"\xff\xfe")
    token.chmod(0o600)
    binary = mlkit_cli("models", "serve", "models:/digits@champion", "--token-file", str(token))
    assert (
        binary.returncode == 2 and "is not UTF-8 text" in binary.stderr and "Traceback" not in binary.stderr
    )


def test_bad_uri_creates_nothing(model, mlkit_cli, store_root):
    result = mlkit_cli("models", "serve", "models:/digits@nosuch", "--gpus", "none")
    assert result.returncode == 66, result.stderr
    assert "nosuch" in result.stderr and "Traceback" not in result.stderr
    assert len(list((store_root / "0").glob("*/meta.yaml"))) == 1


def test_body_over_max_body_is_413(model, serve_cli):
    server = serve_cli("models:/digits@champion", "--max-body", "1KiB")
    big = invoke(server.url, {"inputs": [row(1)] * 40})
    assert big.status == 413 and big.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert invoke(server.url, {"inputs": [row(1)]}).status == 200
    assert server.stop() == 0


def test_slow_request_is_504(torch_ok, registry, serve_cli):
    log_first_pixel("slow", cls="Sleepy", seconds=0.0)  # logs fast; the served copy is made slow below
    server = serve_cli("models:/slow/1", "--timeout", "0.5s")
    assert invoke(server.url, {"inputs": [row(1)]}).status == 200
    server.stop()
    log_first_pixel("slow", cls="Sleepy", seconds=2.0, example=False)
    server = serve_cli("models:/slow/2", "--timeout", "0.5s")
    slow = invoke(server.url, {"inputs": [row(1)]})
    assert (slow.status, slow.body) == (504, b"Request processing time exceeded limit")  # MLflow's answer
    assert server.stop() == 0


def test_a_slow_or_vanishing_upload_is_bounded_by_the_timeout_and_logs_no_traceback(model, serve_cli):
    server = serve_cli("models:/digits@champion", "--timeout", "0.5s")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(
        (host, int(port)), timeout=10
    ) as slow:  # sends 10 of 1000 bytes, then waits
        slow.sendall(head.encode() + b'{"inputs":')
        answer = slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 504")  # the timeout covers reading the body too
    with socket.create_connection((host, int(port)), timeout=10) as gone:  # sends part, then hangs up
        gone.sendall(head.encode() + b'{"inputs":')
    time.sleep(0.3)
    assert invoke(server.url, {"inputs": [row(1)]}).status == 200
    assert server.stop() == 0
    assert "Traceback" not in server.stderr and "Exception in ASGI application" not in server.stderr


def test_sigterm_drains_requests_in_flight_and_exits_0(torch_ok, registry, serve_cli, store_root):
    log_first_pixel("slow", cls="Sleepy", seconds=1.5, example=False)
    server = serve_cli("models:/slow/1")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(invoke(server.url, {"inputs": [row(4)]})))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both requests are in flight
    code = server.stop(signal.SIGTERM)
    for t in threads:
        t.join()
    assert code == 0
    assert [r.status for r in results] == [200, 200]
    assert all(r.json() == {"predictions": [4]} for r in results)
    with pytest.raises(OSError):
        call(server.url, path="/ping", timeout=2)  # and it is gone
    run_id = server.info["run_id"]
    from mlkit.tracking.store import FileStore

    run = FileStore(store_root).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlkit.kind"] == "serving"
    assert run.data.params["model_uri"] == "models:/slow/1" and run.data.params["model_version"] == "1"
    assert run.data.metrics["serve_requests"] == 2.0


def test_binds_loopback_by_default(model, serve_cli):
    server = serve_cli("models:/digits@champion")
    assert server.url.startswith("http://127.0.0.1:")
    port = int(server.url.rsplit(":", 1)[1])
    outside = [a for a in _host_addresses() if not a.startswith("127.")]
    for address in outside:  # not reachable on the machine's other addresses
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(1)
            s.connect((address, port))
    assert server.stop() == 0


def _host_addresses() -> list[str]:
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)})
    except OSError:
        return []


def test_serving_record_flushes_metrics(model, serve_cli, store_root):
    server = serve_cli("models:/digits@champion", "--record-interval", "0.3s")
    for i in range(5):
        assert invoke(server.url, {"inputs": [row(i)]}).status == 200
    assert invoke(server.url, {"inputs": [[1.0]]}).status == 400
    time.sleep(0.8)
    from mlkit.tracking.store import FileStore

    store = FileStore(store_root)
    run_id = server.info["run_id"]
    assert sum(m.value for m in store.get_metric_history(run_id, "serve_requests")) == 6
    assert sum(m.value for m in store.get_metric_history(run_id, "serve_errors")) == 1
    assert store.get_metric_history(run_id, "serve_latency_p99_ms")
    running = store.get_run(run_id)
    assert running.info.status == "RUNNING" and running.data.tags["mlkit.pid"] == str(server.proc.pid)
    assert server.stop() == 0
    # `mlkit runs list` and `mlkit report` show the serving run like any other
    listed = run_mlkit("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    listed_run = next(r for r in json.loads(listed.stdout) if r["run_id"] == run_id)
    assert listed_run["status"] == "FINISHED" and listed_run["run_name"] == "serve-digits@champion"
    page = store_root.parent / "report.html"
    made = run_mlkit("report", "--experiment", "Default", "-o", str(page))
    assert made.returncode == 0, made.stderr
    html = page.read_text()
    assert "serve-digits@champion" in html and "serve_requests" in html


def test_batching_groups_requests_and_never_mixes_shapes(model, serve_cli):
    server = serve_cli("models:/digits@champion", "--max-batch-size", "64", "--max-batch-delay", "50ms")

    def one(i: int):
        if i % 3 == 0:  # another dtype/shape family: strings of the wrong length fail alone
            return i, invoke(server.url, {"inputs": [[1.0, 2.0]]})
        return i, invoke(server.url, {"inputs": [row(i % 10), row((i + 1) % 10)]})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(48)))
    for i, a in answers:
        if i % 3 == 0:
            assert a.status == 400
        else:
            assert a.json() == {"predictions": [i % 10, (i + 1) % 10]}  # each request gets its own rows back
    metrics = call(server.url, path="/metrics").body.decode()
    sizes = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("mlkit_serve_batch_size_")
    }
    assert sizes["mlkit_serve_batch_size_count"] < 32  # 32 good requests ran in fewer forward passes
    assert sizes["mlkit_serve_batch_size_sum"] == 64  # of 2 rows each
    assert server.stop() == 0


def test_workers_share_one_port(model, serve_cli, store_root):
    server = serve_cli("models:/digits@champion", "--workers", "2")
    pids = set()
    for _ in range(40):
        pids.add(call(server.url, path="/v1/model").json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2 and server.proc.pid not in pids
    assert invoke(server.url, {"inputs": [row(8)]}).json() == {"predictions": [8]}
    assert server.stop() == 0
    from mlkit.tracking.store import FileStore

    store = FileStore(store_root)
    runs = [store.get_run(meta.parent.name) for meta in (store_root / "0").glob("*/meta.yaml")]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == server.info["run_id"]]
    assert sorted(r.info.run_name for r in children) == ["worker-0", "worker-1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert store.get_run(server.info["run_id"]).info.status == "FINISHED"


def test_a_waiting_batch_is_not_starved_by_requests_that_never_batch():
    # A steady stream of requests with params (never batched) keeps the model busy back to back; a
    # batchable request still runs within a few --max-batch-delay, not when the stream stops.
    import asyncio

    import numpy as np

    from mlkit.serve.batching import Runner
    from mlkit.serve.metrics import ServeMetrics

    class Slow:
        def predict(self, data, params=None):
            time.sleep(0.02)
            return np.zeros(len(data)) if isinstance(data, np.ndarray) else [0]

    async def scenario() -> float:
        runner = Runner(ServeMetrics(), max_batch_size=8, max_batch_delay=0.01)
        model, stop = Slow(), asyncio.Event()

        async def stream():  # two of these overlap: one runs while the other waits for the model
            while not stop.is_set():
                await runner.predict(model, [1], {"p": 1})

        streaming = asyncio.gather(stream(), stream())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.wait_for(runner.predict(model, np.ones((1, 4), dtype=np.float32), None), 5)
        waited = time.monotonic() - started
        stop.set()
        await streaming
        runner.close()
        return waited

    assert asyncio.run(scenario()) < 1.0


def test_a_module_planted_in_the_working_directory_is_never_imported_by_a_worker(model, serve_cli, tmp_path):
    """The workers were started with `python -m mlkit.serve.worker` in the server's working directory,
    which `-m` puts first on sys.path: whoever can write there (/tmp, a shared directory) planted
    `mlkit/` and ran their code as the user serving the model."""
    where, marker = plant_mlkit(tmp_path)
    server = serve_cli("models:/digits@champion", "--workers", "2", cwd=where)
    assert invoke(server.url, {"inputs": [row(8)]}).json() == {"predictions": [8]}
    assert server.stop() == 0
    assert not marker.exists()
