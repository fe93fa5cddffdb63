"""Model URIs: parsing, and resolution through the registry and the tracking store."""

from __future__ import annotations

import pytest

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.models import parse_model_uri, register_model, resolve_model_uri

RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "uri, expected",
    [
        (f"runs:/{RUN}/model", {"kind": "runs", "run_id": RUN, "artifact_path": "model"}),
        (f"runs:/{RUN}/sub/dir/", {"kind": "runs", "artifact_path": "sub/dir"}),
        ("models:/cnn/3", {"kind": "models", "name": "cnn", "version": 3}),
        ("models:/cnn/production", {"name": "cnn", "stage": "Production"}),
        ("models:/my model/Staging", {"name": "my model", "stage": "Staging"}),
        ("models:/cnn/latest", {"name": "cnn", "latest": True}),
        ("models:/cnn@champion", {"name": "cnn", "alias": "champion"}),
        ("models:/cnn@latest", {"name": "cnn", "latest": True}),
        ("/abs/model", {"kind": "path"}),
    ],
)
def test_parse(uri, expected):
    parsed = parse_model_uri(uri)
    for key, value in expected.items():
        assert getattr(parsed, key) == value, key


@pytest.mark.parametrize(
    "uri",
    [
        "", "runs:/", f"runs:/{RUN}/../../etc", "runs:/../x/model", "models:/cnn", "models:/cnn/0",
        "models:/cnn/prod", "models:/a/b/c", "models://cnn/1", "models:/cnn@bad alias", "models:/../1",
        "s3://bucket/model",
    ],
)  # fmt: skip
def test_parse_rejects(uri):
    with pytest.raises(InvalidInputError, match="invalid model URI"):
        parse_model_uri(uri)


def test_resolution_through_registry(model_run, registry):
    first, second = model_run(), model_run()
    register_model(f"runs:/{first}/model", "m")
    register_model(f"runs:/{second}/model", "m")
    registry.transition_model_version_stage("m", 1, "Production")
    registry.set_alias("m", "champion", 2)
    assert resolve_model_uri("models:/m/production").run_id == first
    assert resolve_model_uri("models:/m@champion").run_id == second
    assert resolve_model_uri("models:/m/latest").version.version == 2
    assert resolve_model_uri(f"runs:/{first[:8]}/model").run_id == first  # a unique prefix works
    via_models = register_model("models:/m/1", "copy")  # registering a registered version keeps its run
    assert via_models.run_id == first and via_models.storage_location == f"runs:/{first}/model"
    with pytest.raises(NotFoundError, match="no version in stage Staging"):
        resolve_model_uri("models:/m/staging")
    with pytest.raises(NotFoundError, match="no alias"):
        resolve_model_uri("models:/m@nobody")
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model_uri("models:/nope/1")
    with pytest.raises(NotFoundError):
        resolve_model_uri(f"runs:/{RUN}/model")
