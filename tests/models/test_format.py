"""The model format: save -> register -> load by stage/alias gives the same module and outputs."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import mlkit
from mlkit.errors import InvalidInputError, NotFoundError
from mlkit.models import ModelLoadError, UnsafeModelError, load_input_example, load_model, log_model
from mlkit.tracking.registry import RegistryStore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _outputs(model, x):
    with torch.no_grad():
        y = model(x)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize(
    "make, example",
    [
        (lambda n: n.SmallCNN(channels=3, classes=5), lambda: torch.randn(4, 3, 8, 8)),
        (
            lambda n: n.CharRNN(vocab=12, hidden=8, cell="lstm", layers=2),
            lambda: torch.randint(0, 12, (3, 7)),
        ),
        (lambda n: n.CharRNN(vocab=12, hidden=8, cell="gru"), lambda: torch.randint(0, 12, (3, 7))),
        (lambda n: n.Generator(nz=6, ngf=3), lambda: torch.randn(5, 6, 1, 1)),
    ],
    ids=["cnn", "lstm", "gru", "gan-generator"],
)
def test_round_trip_save_register_load_by_stage(nets, store_root, make, example):
    torch.manual_seed(0)
    model = make(nets)
    x = example()
    model.train()  # logging must not depend on (or change) the training mode or BatchNorm stats
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with mlkit.start_run() as run:
        info = log_model(model, "model", input_example=x, registered_model_name="net")
    assert info.registered_model_version == 1 and info.run_id == run.info.run_id
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    RegistryStore().transition_model_version_stage("net", 1, "Production")

    loaded = load_model("models:/net/Production")
    assert type(loaded).__name__ == type(model).__name__ and not loaded.training
    model.eval()
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))
    example_back = load_input_example("models:/net/1")[0]
    assert example_back.dtype == x.dtype and torch.allclose(example_back, x)

    mlmodel = (info.path / "MLmodel").read_text()
    assert "python_function:" in mlmodel and "pytorch_version:" in mlmodel and "tensor-spec" in mlmodel
    assert (
        info.path / "code" / "mlkit_test_nets.py"
    ).is_file()  # tests/ is not importable from a fresh interpreter
    assert "torch==" in (info.path / "requirements.txt").read_text()
    history = json.loads(mlkit.FileStore().get_run(info.run_id).data.tags["mlflow.log-model.history"])
    assert history[0]["artifact_path"] == "model"


def test_importable_class_needs_no_code_copy(store_root):
    lin = torch.nn.Linear(3, 2)
    with mlkit.start_run():
        info = log_model(lin, "lin", init_args={"in_features": 3, "out_features": 2})
    assert info.code_module is None and not (info.path / "code").exists()
    assert info.class_path == "torch.nn.modules.linear:Linear"
    x = torch.randn(2, 3)
    assert torch.equal(lin(x), load_model(info.model_uri)(x))


def test_uris_stage_alias_latest_and_version_resolve_the_same_model(nets, store_root):
    models = []
    with mlkit.start_run():
        for width in (4, 6, 8):
            model = nets.SmallCNN(width=width)
            models.append(model)
            log_model(model, f"m{width}", registered_model_name="cnn")
    registry = RegistryStore()
    registry.transition_model_version_stage("cnn", 2, "Staging")
    registry.set_alias("cnn", "champion", 1)
    widths = {
        uri: load_model(uri).init_args["width"]
        for uri in (
            "models:/cnn/1",
            "models:/cnn/staging",
            "models:/cnn@champion",
            "models:/cnn/latest",
            "models:/cnn@latest",
        )
    }
    assert widths == {"models:/cnn/1": 4, "models:/cnn/staging": 6, "models:/cnn@champion": 4,
                      "models:/cnn/latest": 8, "models:/cnn@latest": 8}  # fmt: skip


def test_init_args_must_be_json_and_fit_the_constructor(nets, store_root):
    model = nets.SmallCNN()
    with mlkit.start_run():
        with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
            log_model(model, "a", init_args={"channels": object()})
        with pytest.raises(InvalidInputError, match="do not match"):
            log_model(model, "b", init_args={"nope": 1})
        with pytest.raises(InvalidInputError, match="input_example failed"):
            log_model(model, "c", input_example=torch.randn(2, 7, 8, 8))
        info = log_model(model, "d")
        with pytest.raises(InvalidInputError, match="already there"):
            log_model(model, "d")
    assert sorted(p.name for p in info.path.parent.iterdir()) == ["d"]  # failed attempts left nothing


def test_class_that_cannot_be_imported_names_module_and_class(nets, store_root):
    with mlkit.start_run():
        info = log_model(torch.nn.Linear(2, 2), "lin", init_args={"in_features": 2, "out_features": 2})
    mlmodel = info.path / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("torch.nn.modules.linear:Linear", "no_such_pkg.nets:Net"))
    with pytest.raises(ModelLoadError, match=r"no_such_pkg\.nets:Net"):
        load_model(info.model_uri)


def test_runs_uri_without_a_model(store_root):
    with mlkit.start_run() as run:
        pass
    with pytest.raises(NotFoundError, match="no model there"):
        load_model(f"runs:/{run.info.run_id}/model")


class Payload:
    """Unpickling this runs os.mkdir(marker): the weights loader must never do that."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "raw-pickle"])
def test_tampered_weights_are_refused_and_the_payload_never_runs(store_root, tmp_path, writer):
    with mlkit.start_run():
        info = log_model(torch.nn.Linear(2, 2), "lin", init_args={"in_features": 2, "out_features": 2})
    weights = info.path / "data" / "state_dict.pt"
    marker = tmp_path / "pwned"
    if writer == "torch.save":
        torch.save({"weight": Payload(str(marker))}, weights)
    else:
        weights.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(UnsafeModelError, match="changed after the model was logged"):
        load_model(info.model_uri)
    assert not marker.exists()

    # an attacker who also rewrites the hash in MLmodel still gets nothing unpickled
    import hashlib

    mlmodel = info.path / "MLmodel"
    text = mlmodel.read_text()
    old = text.split("weights_sha256: ")[1].split()[0]
    mlmodel.write_text(text.replace(old, hashlib.sha256(weights.read_bytes()).hexdigest()))
    with pytest.raises(UnsafeModelError, match="objects other than tensors"):
        load_model(info.model_uri)
    assert not marker.exists()


def test_an_mlmodel_naming_a_class_that_is_no_module_runs_nothing(store_root, tmp_path):
    # A tensors-only weights file with its right hash, but MLmodel names subprocess:Popen with
    # init_args that would run a command: refused before anything is built.
    with mlkit.start_run():
        info = log_model(torch.nn.Linear(2, 2), "lin", init_args={"in_features": 2, "out_features": 2})
    import yaml

    marker = tmp_path / "pwned"
    mlmodel = info.path / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    doc["flavors"]["mlkit"].update(
        {"class": "subprocess:Popen", "init_args": {"args": ["touch", str(marker)]}}
    )
    mlmodel.write_text(yaml.safe_dump(doc))
    with pytest.raises(UnsafeModelError, match="is not a torch.nn.Module"):
        load_model(info.model_uri)
    assert not marker.exists()


def test_weights_without_a_recorded_hash_or_odd_flavors_are_refused(store_root):
    with mlkit.start_run():
        info = log_model(torch.nn.Linear(2, 2), "lin", init_args={"in_features": 2, "out_features": 2})
    mlmodel = info.path / "MLmodel"
    text = mlmodel.read_text()
    digest = text.split("weights_sha256: ")[1].split()[0]
    mlmodel.write_text(text.replace(f"weights_sha256: {digest}", "weights_sha256: ''"))
    with pytest.raises(UnsafeModelError, match="records no weights_sha256"):
        load_model(info.model_uri)
    mlmodel.write_text("flavors: [mlkit]\n")
    with pytest.raises(ModelLoadError, match="not an mlkit model"):
        load_model(info.model_uri)


def test_pyfunc_loader_predicts_numpy(nets, store_root):
    from mlkit.models.pyfunc import _load_pyfunc

    model = nets.Generator(nz=4, ngf=2).eval()
    with mlkit.start_run():
        info = log_model(model, "g")
    z = torch.randn(2, 4, 1, 1)
    predicted = _load_pyfunc(str(info.path / "data")).predict(z.numpy())
    assert predicted.shape == (2, 1, 8, 8)
    assert torch.allclose(torch.from_numpy(predicted), model(z).detach())


SCRIPT = '''
"""A trainer-like script: the model class lives in __main__."""
import json, sys
import torch
from torch import nn
import mlkit


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 5):
        super().__init__()
        self.init_args = {"hidden": hidden}
        self.body = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.body(x)


if __name__ == "__main__":
    torch.manual_seed(1)
    net = TinyNet(hidden=7)
    x = torch.linspace(-1, 1, 6).reshape(2, 3)
    with mlkit.start_run():
        info = mlkit.log_model(net, "model", input_example=x, registered_model_name="tiny")
    print(json.dumps({"uri": info.model_uri, "y": net(x).tolist()}))
'''

LOADER = """
import json, sys
import torch
import mlkit
model = mlkit.load_model(sys.argv[1])
x = torch.linspace(-1, 1, 6).reshape(2, 3)
print(json.dumps({"cls": type(model).__name__, "y": model(x).tolist()}))
"""


@pytest.mark.slow
def test_class_from_a_script_is_copied_and_loads_in_a_fresh_process(store_root, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train_tiny.py").write_text(textwrap.dedent(SCRIPT))
    made = subprocess.run(
        [sys.executable, "train_tiny.py"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    saved = json.loads(made.stdout.strip().splitlines()[-1])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "train_tiny.py").unlink()  # the model must not need the original file
    loaded = subprocess.run(
        [sys.executable, "-c", LOADER, "models:/tiny@latest"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["cls"] == "TinyNet" and result["y"] == saved["y"]
    version = RegistryStore().get_model_version("tiny", 1)
    model_dir = mlkit.FileStore().artifact_dir(version.run_id) / "model"
    assert (model_dir / "code" / "train_tiny.py").is_file()
    assert "class: train_tiny:TinyNet" in (model_dir / "MLmodel").read_text()


@pytest.mark.gpu
def test_cuda_model_logs_and_loads_on_the_gpu(nets, store_root):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    model = nets.SmallCNN().cuda().eval()
    x = torch.randn(2, 3, 8, 8)  # the example on the CPU, the model on the GPU: both must work
    with mlkit.start_run():
        info = log_model(model, "model", input_example=x)
    with torch.no_grad():
        expected = model(x.cuda())
        on_gpu = load_model(info.model_uri, map_location="cuda")
        assert next(on_gpu.parameters()).is_cuda
        assert torch.allclose(on_gpu(x.cuda()), expected)
        on_cpu = load_model(info.model_uri)  # weights are stored on the CPU
        assert not next(on_cpu.parameters()).is_cuda
        assert torch.allclose(on_cpu(x), expected.cpu(), atol=1e-4)


def test_two_code_paths_with_one_name_are_refused_not_half_saved(store_root, tmp_path):
    """`code_paths=[a/utils.py, b/utils.py]` would both be code/utils.py: the second used to be
    skipped without a word, so the model loaded the wrong helper. Refused; the same file twice is
    fine."""
    for sub, body in (("a", "X = 1\n"), ("b", "X = 2\n")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "utils.py").write_text(body)
    lin = torch.nn.Linear(3, 2)
    args = {"in_features": 3, "out_features": 2}
    with mlkit.start_run():
        with pytest.raises(InvalidInputError, match="code/utils.py is already"):
            log_model(lin, "two", init_args=args, code_paths=[str(tmp_path / "a" / "utils.py"),
                                                               str(tmp_path / "b" / "utils.py")])  # fmt: skip
        info = log_model(lin, "same", init_args=args, code_paths=[str(tmp_path / "a" / "utils.py")] * 2)
    assert (info.path / "code" / "utils.py").read_text() == "X = 1\n"
    assert sorted(p.name for p in info.path.parent.iterdir()) == ["same"]  # nothing of "two" left
