"""MLflow's own registry FileStore reads what mlkit writes, and mlkit reads what MLflow writes."""

from __future__ import annotations

import pytest

from mlkit.models import register_model

pytestmark = [pytest.mark.mlflow, pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture
def client(store_root, store, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_root.as_uri())
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store_root.as_uri(), registry_uri=store_root.as_uri())


def test_mlflow_reads_mlkits_registry(client, registry, model_run):
    run_id = model_run(metrics={"acc": 0.9})
    register_model(f"runs:/{run_id}/model", "cnn", tags={"k": "v"}, description="first")
    register_model(f"runs:/{run_id}/model", "cnn")
    registry.create_model_version("cnn", f"runs:/{run_id}/model", run_id=run_id)
    registry.delete_model_version("cnn", 3)
    registry.set_registered_model_tag("cnn", "team", "vision")
    registry.update_registered_model("cnn", "a CNN")
    registry.transition_model_version_stage("cnn", 2, "Production")
    registry.set_alias("cnn", "champion", 1)
    # history.jsonl and the .lock file sit beside MLflow's files; MLflow must not mind them

    (model,) = client.search_registered_models()
    assert model.name == "cnn" and model.description == "a CNN" and model.tags == {"team": "vision"}
    assert model.aliases == {"champion": "1"}
    by_alias = client.get_model_version_by_alias("cnn", "champion")
    assert (str(by_alias.version), by_alias.tags, by_alias.description) == ("1", {"k": "v"}, "first")
    assert by_alias.run_id == run_id and by_alias.source == f"runs:/{run_id}/model"
    (prod,) = client.get_latest_versions("cnn", stages=["Production"])
    assert str(prod.version) == "2"
    assert sorted(int(v.version) for v in client.search_model_versions("name='cnn'")) == [1, 2]
    # MLflow continues the numbering after mlkit's soft-deleted version 3, and mlkit sees MLflow's version
    created = client.create_model_version("cnn", f"runs:/{run_id}/model", run_id=run_id)
    assert str(created.version) == "4"
    assert registry.get_latest_version("cnn").version == 4


def test_mlkit_reads_mlflows_registry(client, registry, model_run):
    run_id = model_run(metrics={"loss": 0.2})
    client.create_registered_model("gan", tags={"team": "gen"}, description="dcgan")
    client.create_model_version("gan", f"runs:/{run_id}/model", run_id=run_id, tags={"t": "1"})
    client.create_model_version("gan", f"runs:/{run_id}/model", run_id=run_id)
    client.transition_model_version_stage("gan", "2", "staging")
    client.set_registered_model_alias("gan", "champion", "1")
    client.update_model_version("gan", "1", "v1 desc")

    model = registry.get_registered_model("gan")
    assert (model.tags, model.description, model.aliases) == ({"team": "gen"}, "dcgan", {"champion": 1})
    v1 = registry.get_version_by_alias("gan", "champion")
    assert (v1.version, v1.tags, v1.description, v1.run_id) == (1, {"t": "1"}, "v1 desc", run_id)
    assert registry.get_version_by_stage("gan", "Staging").version == 2
    assert registry.get_model_version_lineage("gan", 2).metrics == {"loss": 0.2}
    # mlkit's writes on an MLflow-made model stay readable by MLflow
    registry.transition_model_version_stage("gan", 1, "Production", archive_existing=True)
    assert client.get_model_version("gan", "1").current_stage == "Production"
    register_model(f"runs:/{run_id}/model", "gan")
    assert client.get_model_version("gan", "3").run_id == run_id


@pytest.mark.torch
def test_mlflow_parses_the_signature_of_a_logged_model(store_root, nets):
    import torch
    import yaml
    from mlflow.types.schema import Schema

    import mlkit

    with mlkit.start_run():
        info = mlkit.log_model(nets.SmallCNN(classes=4), "model", input_example=torch.randn(2, 3, 8, 8))
    mlmodel = yaml.safe_load((info.path / "MLmodel").read_text())
    inputs = Schema.from_json(mlmodel["signature"]["inputs"]).inputs[0]
    outputs = Schema.from_json(mlmodel["signature"]["outputs"]).inputs[0]
    assert (str(inputs.type), inputs.shape) == ("float32", (-1, 3, 8, 8))
    assert (str(outputs.type), outputs.shape) == ("float32", (-1, 4))
    assert mlmodel["run_id"] == info.run_id and mlmodel["artifact_path"] == "model"
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlkit.models.pyfunc"
