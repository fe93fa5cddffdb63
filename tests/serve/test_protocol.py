"""MLflow's scoring protocol: every payload shape and error answered as MLflow's own scoring server
(`mlflow models serve --env-manager local`) answers it, on the same model directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from serve.serve_helpers import (
    DIGIT_ROW,
    Server,
    call,
    digits_transform,
    free_port,
    load_servenets,
    need,
    row,
)

pytestmark = [pytest.mark.serve, pytest.mark.torch, pytest.mark.slow]

COLUMNS = [str(i) for i in range(64)]
R = [float(v) for v in DIGIT_ROW]

# (name, content type, body): each answered the same by MLflow and mlkit
CASES = [
    ("inputs", "application/json", {"inputs": [R, row(4)]}),
    ("inputs, ints", "application/json", {"inputs": [DIGIT_ROW]}),
    ("instances", "application/json", {"instances": [R, row(7)]}),
    ("dataframe_split", "application/json", {"dataframe_split": {"columns": COLUMNS, "data": [R, row(2)]}}),
    ("dataframe_records", "application/json", {"dataframe_records": [dict(zip(COLUMNS, R, strict=True))]}),
    ("params", "application/json", {"inputs": [R], "params": {"anything": 1}}),
    ("charset", "application/json; charset=utf-8", {"inputs": [R]}),
    ("malformed JSON", "application/json", "{bad"),
    ("a list", "application/json", [1, 2]),
    ("a number", "application/json", 3),
    ("two input fields", "application/json", {"inputs": [R], "instances": [R]}),
    ("MLflow 1.x payload", "application/json", {"columns": COLUMNS, "data": [R]}),
    ("wrong shape", "application/json", {"inputs": [[1.0, 2.0, 3.0]]}),
    ("not numbers", "application/json", {"inputs": [["a"] * 64]}),
    ("records of the wrong shape", "application/json", {"dataframe_records": [{"a": 1}]}),
    ("text/plain", "text/plain", "x"),
    ("latin-1", "application/json; charset=latin-1", {"inputs": [R]}),
    ("unknown parameter", "application/json; foo=bar", {"inputs": [R]}),
]


def _body(payload) -> bytes:
    return payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """The same FirstPixel model directory twice: with a signature (input example) and without."""
    pytest.importorskip("torch")
    from mlkit.models.save import save_model

    nets = load_servenets()
    base = tmp_path_factory.mktemp("models")
    save_model(nets.FirstPixel(), base / "signed", input_example=[R, row(3)], transform=digits_transform())
    save_model(nets.FirstPixel(), base / "plain", transform=digits_transform())
    return base / "signed", base / "plain"


class MlflowServer:
    def __init__(self, model_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [shutil.which("mlflow") or "mlflow", "models", "serve", "--env-manager", "local",
                "-m", str(model_dir), "-p", str(self.port), "-h", "127.0.0.1"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mlflow models serve exited: {self.proc.stderr.read().decode()[-2000:]}"
                )
            try:
                if call(self.url, path="/ping", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("mlflow models serve did not start in 120 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _mlflow_can_serve() -> None:
    need(shutil.which("mlflow") is not None, "mlflow is not installed (pip install mlflow-skinny)")
    # mlflow-skinny's pyfunc module imports pandas at import time: without it `mlflow models serve` fails
    need(
        importlib.util.find_spec("pandas") is not None,
        "pandas is not installed: mlflow's pyfunc server needs it",
    )


@pytest.fixture(scope="module")
def servers(model_dirs, tmp_path_factory):
    _mlflow_can_serve()
    signed, plain = model_dirs
    store = tmp_path_factory.mktemp("store")
    env = {"MLKIT_TRACKING_URI": str(store), "MLKIT_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    started = []
    try:
        pairs = {}
        for model_dir in (signed, plain):
            mlflow = MlflowServer(model_dir)
            started.append(mlflow)
            mlkit = Server(str(model_dir), env=env)
            started.append(mlkit)
            pairs[model_dir.name] = (mlflow, mlkit)
        yield pairs
    finally:
        for server in started:
            server.stop()


def _answer(url: str, content_type: str, body: bytes):
    a = call(url, "POST", "/invocations", body, content_type=content_type)
    ctype = a.headers.get("content-type", "").split(";")[0]
    if ctype == "application/json":
        data = json.loads(a.body)
        return a.status, ctype, data.get("error_code") if "error_code" in data else data, data
    return a.status, ctype, a.body.decode(), None


@pytest.mark.parametrize("name, content_type, payload", CASES, ids=[c[0] for c in CASES])
def test_payload_answered_as_mlflow_answers(servers, name, content_type, payload):
    mlflow, mlkit = servers["signed"]
    theirs = _answer(mlflow.url, content_type, _body(payload))
    ours = _answer(mlkit.url, content_type, _body(payload))
    assert ours[:3] == theirs[:3]  # status, content type, and the predictions or the error code
    if ours[3] is not None and "message" in ours[3]:
        assert "stack_trace" not in ours[3]
        # the same message as far as it does not quote the data (MLflow prints a pandas frame)
        assert ours[3]["message"][:24] == theirs[3]["message"][:24]


def test_csv_answered_as_mlflow_answers(servers):
    """CSV as MLflow takes it (a model without a tensor signature: MLflow's CSV parser fails on one)."""
    mlflow, mlkit = servers["plain"]
    csv = ",".join(COLUMNS) + "\n" + "\n".join(",".join(str(v) for v in r) for r in (R, row(6))) + "\n"
    theirs = _answer(mlflow.url, "text/csv", csv.encode())
    ours = _answer(mlkit.url, "text/csv", csv.encode())
    assert ours == theirs
    assert ours[2] == {"predictions": [0, 6]}


def test_csv_on_a_signed_model_works_where_mlflow_fails(servers):
    mlflow, mlkit = servers["signed"]
    csv = ",".join(COLUMNS) + "\n" + ",".join(str(v) for v in row(5)) + "\n"
    assert (
        call(mlflow.url, "POST", "/invocations", csv, content_type="text/csv").status == 400
    )  # MLflow's bug
    assert json.loads(call(mlkit.url, "POST", "/invocations", csv, content_type="text/csv").body) == {
        "predictions": [5]
    }


def test_get_endpoints_as_mlflow(servers):
    mlflow, mlkit = servers["signed"]
    for path in ("/ping", "/health"):
        theirs, ours = call(mlflow.url, path=path), call(mlkit.url, path=path)
        assert (ours.status, ours.body) == (theirs.status, theirs.body) == (200, b"\n")
    assert call(mlkit.url, path="/version").status == 200
    assert call(mlkit.url, path="/nope").status == call(mlflow.url, path="/nope").status == 404
    assert call(mlkit.url, path="/invocations").status == call(mlflow.url, path="/invocations").status == 405


def test_mlflow_client_works_unchanged(servers):
    """MLflow's own client for a scoring server (mlflow.deployments' predict payload helper)."""
    pytest.importorskip("pandas")
    import numpy as np
    from mlflow.utils.proto_json_utils import dump_input_data

    _, mlkit = servers["signed"]
    body = dump_input_data(np.asarray([R, row(9)]))
    assert json.loads(call(mlkit.url, "POST", "/invocations", body).body) == {"predictions": [0, 9]}


def test_v1_model_and_metrics(servers):
    _, mlkit = servers["signed"]
    info = call(mlkit.url, path="/v1/model").json()
    assert info["version"] is None and info["follows"] is False and info["device"] == "cpu"
    assert info["loaded_at"].endswith("Z")
    text = call(mlkit.url, path="/metrics").body.decode()
    for name in ("mlkit_serve_requests_total", "mlkit_serve_errors_total", "mlkit_serve_request_seconds_bucket",
                 "mlkit_serve_batch_size_bucket", "mlkit_serve_queue_depth", "mlkit_serve_model_version"):  # fmt: skip
        assert name in text


def test_parquet_without_a_safe_pyarrow_is_415_never_read(monkeypatch):
    # pyarrow before 14.0.1 unpickles extension-type metadata a request carries (CVE-2023-47248):
    # such a body is refused like a missing pyarrow, before pandas touches it.
    import importlib.metadata

    from mlkit.serve import protocol

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "14.0.0")
    touched: list[bytes] = []
    if importlib.util.find_spec("pandas") is not None:
        import pandas as pd

        monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: touched.append(b"read"))
    with pytest.raises(protocol.UnsupportedMedia, match="pyarrow 14.0.1"):
        protocol.parse_request(b"PAR1....PAR1", protocol.CONTENT_TYPE_PARQUET, [])
    assert touched == []


def test_latency_quantiles_are_nearest_rank():
    from mlkit.serve.metrics import _quantile

    assert _quantile([1.0, 2.0], 0.5) == 1.0
    hundred = [float(i) for i in range(1, 101)]
    assert _quantile(hundred, 0.99) == 99.0 and _quantile(hundred, 0.5) == 50.0
    assert _quantile([5.0], 0.99) == 5.0
