"""The trainers' own model classes (projects/*/model.py): save -> register -> load by stage.

All three projects name their module `model`, so loading them in one process also checks that a
copied `code/model.py` never shadows another model's class.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import mlkit
from mlkit.tracking.registry import RegistryStore

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

PROJECTS = Path(__file__).resolve().parents[2] / "projects"
CASES = {
    "cnn": ("Net", {"in_channels": 1, "num_classes": 10, "width": 4}, lambda: torch.randn(3, 1, 8, 8)),
    "rnn": (
        "CharLM",
        {"vocab_size": 256, "embed": 8, "hidden": 12, "layers": 2},
        lambda: torch.randint(0, 256, (2, 9)),
    ),
    "gan": ("Generator", {"nz": 8, "ngf": 4, "image_size": 16}, lambda: torch.randn(2, 8, 1, 1)),
}


def _project_class(project: str, class_name: str) -> type:
    """Import projects/<project>/model.py as `model`, the way its train.py does, then forget it."""
    directory = PROJECTS / project
    if not (directory / "model.py").is_file():
        pytest.skip(f"projects/{project}/model.py does not exist")
    saved = sys.modules.pop("model", None)
    sys.path.insert(0, str(directory))
    try:
        import model as module  # noqa: PLC0415

        return getattr(module, class_name)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("model", None)
        if saved is not None:
            sys.modules["model"] = saved


@pytest.fixture
def restore_model_module():
    """Leave sys.modules['model'] as it was: loading puts the first copied `model` module there."""
    saved = sys.modules.get("model")
    yield
    sys.modules.pop("model", None)
    if saved is not None:
        sys.modules["model"] = saved


def test_project_models_round_trip_in_one_process(store_root, restore_model_module, tmp_path):
    # Another `model` module is already loaded (as after loading some other model): logging must
    # still copy each class's own source, not whatever sys.modules["model"] now points at.
    decoy = tmp_path / "decoy" / "model.py"
    decoy.parent.mkdir()
    decoy.write_text("class Decoy:\n    pass\n")
    sys.modules["model"] = types.ModuleType("model")
    sys.modules["model"].__file__ = str(decoy)
    expected = {}
    registry = RegistryStore()
    for project, (class_name, init_args, example) in CASES.items():
        cls = _project_class(project, class_name)
        torch.manual_seed(0)
        net = cls(**init_args).eval()
        x = example()
        with torch.no_grad():
            expected[project] = (x, net(x))
        with mlkit.start_run():
            info = mlkit.log_model(net, "model", input_example=x.numpy(), registered_model_name=project)
        assert info.code_module == "model"
        assert (info.path / "code" / "model.py").read_text() == (PROJECTS / project / "model.py").read_text()
        registry.transition_model_version_stage(project, 1, "Production")
    for project, (x, y) in expected.items():
        loaded = mlkit.load_model(f"models:/{project}/Production")
        assert type(loaded).__name__ == CASES[project][0]
        with torch.no_grad():
            assert torch.equal(loaded(x), y), project
