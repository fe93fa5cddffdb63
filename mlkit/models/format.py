"""The model directory: MLflow's MLmodel format, with tensors-only weights and a rebuild recipe.

```
<artifacts>/model/
  MLmodel                 flavors: python_function, pytorch, mlkit (class, init_args, weights hash)
  data/state_dict.pt      the state dict (torch.save of tensors only; loaded with weights_only=True)
  code/<module>.py        the model class's source when a fresh interpreter could not import it
  conda.yaml  python_env.yaml  requirements.txt      torch pinned to the version that saved it
  input_example.json      when an input example was given (signature inferred from it)
```

Loading never unpickles arbitrary objects: the weights file's SHA-256 must match the MLmodel
file, and torch's weights-only unpickler refuses anything that is not a tensor container.

This module holds what saving and loading share: the file names, the errors, torch on demand and
the weights hash. `save` writes the directory, `load` rebuilds the module from it, `source` decides
which code is copied into `code/`, `example` turns an input example into tensors and a signature.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mlkit.errors import ExitCode, InvalidInputError, MlkitError, NotFoundError
from mlkit.tracking import files

FLAVOR = "mlkit"
FORMAT_VERSION = 1
WEIGHTS_FILE = "data/state_dict.pt"
CODE_DIR = "code"
INPUT_EXAMPLE_FILE = "input_example.json"
LOG_MODEL_HISTORY_TAG = "mlflow.log-model.history"


class ModelLoadError(MlkitError):
    """A model directory cannot be turned back into a module (class, init args or weights)."""

    exit_code = ExitCode.FAILURE


class UnsafeModelError(MlkitError):
    """A weights file was changed after logging, or holds objects that would need unpickling."""

    exit_code = ExitCode.FAILURE


def require_torch() -> Any:
    """torch, imported when a model is saved or loaded (never at `import mlkit`)."""
    try:
        # import budget: torch loads only when a model is saved or loaded
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the train extra
        raise InvalidInputError(
            "saving or loading a model needs torch, which is not installed",
            hint="pip install 'mlkit[train]' (or torch itself)",
        ) from exc
    return torch


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks: the weights hash MLmodel records."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    """The MLmodel file of a model directory as a dict."""
    path = Path(model_dir) / "MLmodel"
    try:
        data = files.read_yaml(path)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{model_dir}: no MLmodel file there", hint="is this a model directory?") from exc
    return data
