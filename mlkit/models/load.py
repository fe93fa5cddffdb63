"""Loading a model: the weights checked against their hash and read by torch's weights-only
unpickler, the class imported (from `code/` when it was copied), rebuilt with its init args."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from mlkit.errors import NotFoundError
from mlkit.models.format import (
    CODE_DIR,
    FLAVOR,
    WEIGHTS_FILE,
    ModelLoadError,
    UnsafeModelError,
    file_sha256,
    read_mlmodel,
    require_torch,
)
from mlkit.models.uri import resolve_model_uri


def _flavor(mlmodel: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    flavors = mlmodel.get("flavors")
    flavor = flavors.get(FLAVOR) if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        names = (
            ", ".join(sorted(str(k) for k in flavors)) if isinstance(flavors, dict) and flavors else "none"
        )
        raise ModelLoadError(
            f"{model_dir}: not an mlkit model (flavors: {names})",
            hint="mlkit loads models saved with mlkit.log_model; load others with MLflow itself",
        )
    return flavor


def load_state_dict_safely(
    path: Path, expected_sha256: str | None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a tensors-only weights file; refuse a changed file, one without its recorded hash, or
    anything that needs unpickling. The bytes hashed are the bytes loaded (read once)."""
    torch = require_torch()
    if not path.is_file():
        raise NotFoundError(
            f"{path}: the model's weights file is missing", hint="the model directory is incomplete"
        )
    if not expected_sha256:
        raise UnsafeModelError(
            f"{path}: refused to load: the MLmodel file records no weights_sha256 for it",
            hint="log the model again with mlkit.log_model (it records the weights' hash)",
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise UnsafeModelError(
            f"{path}: refused to load: the weights file changed after the model was logged (SHA-256 mismatch)",
            hint="log the model again from its run; never load weights from an untrusted source",
        )
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler met a non-tensor object
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeModelError(
            f"{path}: refused to load: the file holds objects other than tensors ({first[:160]})",
            hint="mlkit loads tensors-only weights and never unpickles arbitrary objects; log the model again",
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot read the weights: {type(exc).__name__}: {exc}".splitlines()[0][:240],
            hint="the file is damaged or was written by an incompatible torch; log the model again",
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UnsafeModelError(
            f"{path}: refused to load: expected a dict of tensors, found {type(state).__name__}",
            hint="log the model again with mlkit.log_model",
        )
    return state


def _import_class(model_dir: Path, class_path: str, code_module: str | None) -> type:
    module_name, _, qualname = class_path.partition(":")
    if not module_name or not qualname:
        raise ModelLoadError(
            f"{model_dir}/MLmodel: bad class path {class_path!r}", hint="expected 'module:Class'"
        )
    code_dir = model_dir / CODE_DIR
    try:
        if code_module and code_dir.is_dir():
            module = _import_from_code_dir(code_dir, module_name)
        else:
            if code_dir.is_dir():
                sys.path.insert(0, str(code_dir))
            try:
                module = importlib.import_module(module_name)
            finally:
                if code_dir.is_dir():
                    sys.path.remove(str(code_dir))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot import the model class {class_path}: {type(exc).__name__}: {exc}".splitlines()[0],
            hint=f"install the package that provides {module_name!r} (or log the model again so its code is copied)",
        ) from exc
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ModelLoadError(
                f"cannot import the model class {class_path}: {module_name!r} has no {qualname!r}",
                hint="the class was renamed or removed since the model was logged",
            )
    if not isinstance(target, type):
        raise ModelLoadError(f"{class_path} is not a class", hint="the MLmodel file names the wrong object")
    torch = require_torch()
    if not issubclass(target, torch.nn.Module):  # e.g. subprocess:Popen, which init_args would run
        raise UnsafeModelError(
            f"{model_dir}/MLmodel: refused to load: {class_path} is not a torch.nn.Module",
            hint="mlkit models are torch modules; never load a model directory from an untrusted source",
        )
    return target


def _import_from_code_dir(code_dir: Path, module_name: str) -> Any:
    """Import `module_name` from the model's code/ copy, without clobbering a same-named module already loaded."""
    top = module_name.split(".")[0]
    copy = code_dir / f"{top}.py"
    loaded = sys.modules.get(module_name)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded is not None and loaded_file and copy.is_file() and Path(loaded_file).is_file():
        if file_sha256(Path(loaded_file)) == file_sha256(copy):
            return loaded  # the very source the model was saved from: keep class identity
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == top or k.startswith(top + ".")}
    sys.path.insert(0, str(code_dir))
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(str(code_dir))
        fresh = {k: sys.modules.pop(k) for k in list(sys.modules) if k == top or k.startswith(top + ".")}
        sys.modules.update(saved if saved else fresh)
    origin = os.path.realpath(getattr(module, "__file__", "") or "")
    if not origin.startswith(os.path.realpath(code_dir) + os.sep):
        raise ImportError(f"{module_name!r} resolved to {origin}, not to the model's code/ copy")
    return module


def load_model_from_dir(model_dir: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """Rebuild the module from a model directory, load its weights (strict) and eval() it."""
    model_dir = Path(model_dir)
    mlmodel = read_mlmodel(model_dir)
    flavor = _flavor(mlmodel, model_dir)
    class_path = str(flavor.get("class") or "")
    init_args = flavor.get("init_args") or {}
    weights = model_dir / str(flavor.get("weights") or WEIGHTS_FILE)
    if not os.path.realpath(weights).startswith(os.path.realpath(model_dir) + os.sep):
        raise UnsafeModelError(
            f"{model_dir}/MLmodel: weights path {flavor.get('weights')!r} leaves the model directory", hint=""
        )
    state = load_state_dict_safely(weights, flavor.get("weights_sha256"), "cpu")
    cls = _import_class(model_dir, class_path, flavor.get("code_module"))
    try:
        model = cls(**init_args)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot rebuild {class_path}(**{json.dumps(init_args)[:120]}): {type(exc).__name__}: {exc}".splitlines()[
                0
            ],
            hint="the class's constructor changed since the model was logged",
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:240]
        raise ModelLoadError(
            f"weights do not fit {class_path}: {detail}", hint="the class changed since the model was logged"
        ) from exc
    if str(map_location) != "cpu":
        model.to(map_location)
    model.eval()
    return model


def load_model(uri: str, *, map_location: Any = "cpu") -> Any:
    """Load a model by URI (runs:/, models:/NAME/VERSION|STAGE|latest, models:/NAME@ALIAS, or a path)."""

    return load_model_from_dir(resolve_model_uri(uri).path, map_location=map_location)
