"""The registry store: versions, stages, aliases, tags, descriptions, deletion, lineage, audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.models import register_model


def history_whats(registry, name: str) -> list[str]:
    return [e.what for e in registry.history(name)]


def test_versions_are_numbered_from_one_and_never_reused(registry):
    for _ in range(3):
        registry.create_model_version("m", "runs:/r/model", run_id="r")
    registry.delete_model_version("m", 3)
    assert [v.version for v in registry.list_model_versions("m")] == [1, 2]
    assert registry.create_model_version("m", "runs:/r/model").version == 4
    with pytest.raises(NotFoundError, match="no version 3"):
        registry.get_model_version("m", 3)


def test_version_meta_is_mlflows_layout(registry, store_root: Path):
    registry.create_model_version("m", "runs:/abc/model", run_id="abc", tags={"k": "v"}, description="first")
    meta = (store_root / "models/m/version-1/meta.yaml").read_text()
    assert "current_stage: None\n" in meta and "status: READY\n" in meta and "version: 1\n" in meta
    assert "source: runs:/abc/model\n" in meta and "storage_location: runs:/abc/model\n" in meta
    assert (store_root / "models/m/version-1/tags/k").read_text() == "v"
    assert "name: m\n" in (store_root / "models/m/meta.yaml").read_text()


def test_stages_and_archive_existing(registry):
    for _ in range(3):
        registry.create_model_version("m", "runs:/r/model")
    registry.transition_model_version_stage("m", 1, "production")
    registry.transition_model_version_stage("m", 2, "PRODUCTION")
    assert {v.version for v in registry.list_model_versions("m") if v.current_stage == "Production"} == {1, 2}
    assert registry.get_version_by_stage("m", "production").version == 2  # the highest in the stage
    registry.transition_model_version_stage("m", 3, "Production", archive_existing=True)
    stages = {v.version: v.current_stage for v in registry.list_model_versions("m")}
    assert stages == {1: "Archived", 2: "Archived", 3: "Production"}
    with pytest.raises(InvalidInputError, match="only when moving to Staging or Production"):
        registry.transition_model_version_stage("m", 1, "Archived", archive_existing=True)
    with pytest.raises(InvalidInputError, match="invalid stage 'prod'"):
        registry.transition_model_version_stage("m", 1, "prod")
    with pytest.raises(NotFoundError, match="no version in stage Staging"):
        registry.get_version_by_stage("m", "Staging")


def test_aliases(registry, store_root: Path):
    registry.create_model_version("m", "runs:/r/model")
    registry.create_model_version("m", "runs:/r/model")
    registry.set_alias("m", "champion", 1)
    registry.set_alias("m", "champion", "2")
    assert (store_root / "models/m/aliases/champion").read_text() == "2"
    assert registry.get_version_by_alias("m", "champion").version == 2
    assert registry.get_version_by_alias("m", "latest").version == 2
    assert registry.get_registered_model("m").aliases == {"champion": 2}
    for reserved in ("latest", "v3", "V1"):
        with pytest.raises(InvalidInputError, match="reserved"):
            registry.set_alias("m", reserved, 1)
    with pytest.raises(InvalidInputError, match="invalid alias"):
        registry.set_alias("m", "a/b", 1)
    with pytest.raises(NotFoundError):
        registry.set_alias("m", "x", 9)
    registry.delete_model_version("m", 2)  # drops the alias that pointed at it
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        registry.get_version_by_alias("m", "champion")


def test_tags_and_descriptions(registry):
    registry.create_registered_model("m", tags={"team": "vision"}, description="d0")
    registry.create_model_version("m", "runs:/r/model")
    registry.set_registered_model_tag("m", "owner", "ana")
    registry.set_model_version_tag("m", 1, "validated", "yes")
    registry.update_registered_model("m", "d1")
    registry.update_model_version("m", 1, "v-desc")
    model = registry.get_registered_model("m")
    assert model.tags == {"team": "vision", "owner": "ana"} and model.description == "d1"
    version = registry.get_model_version("m", 1)
    assert version.tags == {"validated": "yes"} and version.description == "v-desc"
    registry.delete_registered_model_tag("m", "owner")
    registry.delete_model_version_tag("m", 1, "validated")
    assert registry.get_registered_model("m").tags == {"team": "vision"}
    with pytest.raises(NotFoundError):
        registry.delete_registered_model_tag("m", "owner")
    with pytest.raises(InvalidInputError):
        registry.set_registered_model_tag("m", "../x", "1")


@pytest.mark.parametrize(
    "name", ["a/b", "..", "../evil", "a\x00b", "x:y", "50%", "", "  ", ".hidden", "a\\b"]
)
def test_bad_names_are_refused_and_nothing_is_written(registry, store_root: Path, name: str):
    with pytest.raises(InvalidInputError):
        registry.create_model_version(name, "runs:/r/model")
    assert not (store_root / "models").exists() or list((store_root / "models").iterdir()) == []


def test_unknown_model_and_version(registry):
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        registry.get_registered_model("nope")
    registry.create_model_version("m", "runs:/r/model")
    for bad in ("0", "-1", "x"):
        with pytest.raises(InvalidInputError):
            registry.get_model_version("m", bad)
    with pytest.raises(NotFoundError):
        registry.transition_model_version_stage("m", 7, "Staging")


def test_a_version_is_written_in_ascii_digits_only(registry):
    """`int()` also takes '١' (an Arabic-Indic one), '1_0' and ' +1': each named version 1 or 10
    by another spelling. A version is plain digits, as MLflow's stores write it."""
    registry.create_model_version("m", "runs:/r/model")
    assert registry.get_model_version("m", "1").version == registry.get_model_version("m", 1).version == 1
    for bad in ("\u0661", "+1", "1_0", "\uff11"):
        with pytest.raises(InvalidInputError, match="whole numbers from 1"):
            registry.get_model_version("m", bad)


def test_every_change_appends_a_history_line(registry, store_root: Path):
    registry.create_model_version("m", "runs:/r/model")
    registry.create_model_version("m", "runs:/r/model")
    registry.transition_model_version_stage("m", 1, "Staging")
    registry.transition_model_version_stage("m", 2, "Staging", archive_existing=True)
    registry.set_alias("m", "champion", 2)
    registry.delete_alias("m", "champion")
    registry.set_registered_model_tag("m", "k", "v")
    registry.delete_registered_model_tag("m", "k")
    registry.set_model_version_tag("m", 1, "k", "v")
    registry.update_registered_model("m", "desc")
    registry.update_model_version("m", 1, "vdesc")
    registry.delete_model_version("m", 1)
    assert history_whats(registry, "m") == [
        "create_model", "create_version", "create_version", "set_stage", "set_stage", "set_stage",
        "set_alias", "delete_alias", "set_tag", "delete_tag", "set_version_tag", "set_description",
        "set_version_description", "delete_version",
    ]  # fmt: skip
    lines = [json.loads(x) for x in (store_root / "models/m/history.jsonl").read_text().splitlines()]
    archived = lines[4]
    assert (archived["version"], archived["from"], archived["to"]) == (1, "Staging", "Archived")
    staged = lines[5]
    assert (staged["what"], staged["version"], staged["from"], staged["to"]) == (
        "set_stage",
        2,
        "None",
        "Staging",
    )
    assert "@" in staged["who"] and staged["when"].endswith("Z")
    alias = lines[6]
    assert (alias["from"], alias["to"], alias["details"]) == (None, "2", {"alias": "champion"})


def test_deleting_a_model_keeps_its_history(registry, store_root: Path):
    registry.create_model_version("m", "runs:/r/model")
    registry.delete_registered_model("m")
    assert not (store_root / "models/m").exists()
    assert history_whats(registry, "m") == ["create_model", "create_version", "delete_model"]
    registry.create_model_version("m", "runs:/r/model")  # a new model of the same name starts at 1
    assert registry.get_latest_version("m").version == 1
    assert history_whats(registry, "m")[-2:] == ["create_model", "create_version"]
    with pytest.raises(NotFoundError):
        registry.history("never-existed")


def test_lineage_reads_the_source_runs_params_and_metrics(registry, model_run):
    run_id = model_run(metrics={"val_acc": 0.9, "loss": 0.1}, params={"lr": "0.01"})
    version = register_model(f"runs:/{run_id}/model", "m")
    lineage = registry.get_model_version_lineage("m", version.version)
    assert lineage.run_found and lineage.run_id == run_id
    assert lineage.params == {"lr": "0.01"} and lineage.metrics == {"val_acc": 0.9, "loss": 0.1}
    assert registry.referenced_run_ids() == {run_id}


def test_register_refuses_a_run_without_a_model_and_writes_nothing(model_run, store_root: Path):
    run_id = model_run(with_model=False)
    with pytest.raises(NotFoundError, match="no model there"):
        register_model(f"runs:/{run_id}/model", "m")
    assert not (store_root / "models" / "m").exists()


def test_download_copies_the_model_directory(model_run, tmp_path: Path):
    from mlkit.models import download_model

    run_id = model_run()
    register_model(f"runs:/{run_id}/model", "m")
    target = download_model("models:/m/1", tmp_path / "out")
    assert (target / "MLmodel").read_text().startswith("artifact_path: model")
    with pytest.raises(InvalidInputError, match="not an empty directory"):
        download_model("models:/m/1", target)


def test_the_audit_log_is_never_appended_through_a_planted_link(registry, store_root: Path, tmp_path: Path):
    # On a shared store another user may replace history.jsonl with a link to a file of yours:
    # the next registry change refuses to write through it.
    from mlkit.errors import StoreError

    registry.create_registered_model("m")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    log = store_root / "models/m/history.jsonl"
    log.unlink()
    log.symlink_to(victim)
    with pytest.raises(StoreError, match="cannot append to the audit log"):
        registry.set_registered_model_tag("m", "k", "v")
    assert victim.read_text() == "mine\n"


def test_an_input_example_path_outside_the_model_is_refused(store_root: Path, tmp_path: Path):
    torch = pytest.importorskip("torch")
    import yaml

    import mlkit
    from mlkit.models import UnsafeModelError, load_input_example, log_model

    with mlkit.start_run():
        info = log_model(torch.nn.Linear(2, 2), "lin", init_args={"in_features": 2, "out_features": 2},
                         input_example=torch.zeros(1, 2))  # fmt: skip
    outside = tmp_path / "secret.json"
    outside.write_text('{"inputs": [[1.0, 2.0]]}')
    mlmodel = info.path / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    doc["saved_input_example_info"]["artifact_path"] = str(outside)
    mlmodel.write_text(yaml.safe_dump(doc))
    with pytest.raises(UnsafeModelError, match="leaves the model directory"):
        load_input_example(info.model_uri)
