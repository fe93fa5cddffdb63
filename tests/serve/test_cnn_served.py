"""The CNN trained by projects/cnn, registered and served, answers raw digits with digit labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve.serve_helpers import invoke

pytestmark = [pytest.mark.serve, pytest.mark.torch, pytest.mark.slow]
CNN = Path(__file__).resolve().parents[2] / "projects" / "cnn"


def test_cnn_from_the_registry_answers_raw_digits(torch_ok, mlkit_cli, serve_cli, registry):
    pytest.importorskip("sklearn")
    # a short training (5 epochs: >= 97 % from epoch 4, about 10 s on 2 CPU cores)
    trained = mlkit_cli(
        "run", str(CNN), "-P", "epochs=5", "--env-manager", "local", "--gpus", "none", "--json", timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_id = json.loads(trained.stdout)["run_id"]
    registered = mlkit_cli("models", "register", f"runs:/{run_id}/model", "cnn")
    assert registered.returncode == 0, registered.stderr
    assert mlkit_cli("models", "alias", "cnn", "champion", "1").returncode == 0

    server = serve_cli("models:/cnn@champion")
    import torch
    from sklearn.datasets import load_digits

    from mlkit.train.data import stratified_split

    digits = load_digits()  # what the data set holds: rows of 64 pixel values 0..16, labels 0..9
    _, held_out = stratified_split(torch.tensor(digits.target), 0.2, 0)
    rows, labels = digits.data[held_out.numpy()], digits.target[held_out.numpy()]
    predicted = []
    for start in range(0, len(rows), 90):
        answer = invoke(server.url, {"inputs": rows[start : start + 90].tolist()})
        assert answer.status == 200, answer.body
        predicted += answer.json()["predictions"]
    accuracy = sum(int(p == int(y)) for p, y in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy >= 0.97, accuracy
    assert all(isinstance(p, int) and 0 <= p <= 9 for p in predicted)  # labels, not logits
    assert server.stop() == 0
