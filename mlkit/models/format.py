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
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import pickle
import platform
import posixpath
import shutil
import site
import sys
import sysconfig
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlkit import __version__
from mlkit.errors import ExitCode, InvalidInputError, MlkitError, NotFoundError, StoreError
from mlkit.tracking import files
from mlkit.tracking.validation import validate_artifact_path

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


@dataclass
class ModelInfo:
    """What `log_model` wrote: where the model lives and how it will be rebuilt."""

    run_id: str
    artifact_path: str
    model_uri: str
    path: Path
    model_uuid: str
    utc_time_created: str
    class_path: str
    init_args: dict[str, Any]
    code_module: str | None
    signature: dict[str, Any] | None
    flavors: dict[str, Any] = field(default_factory=dict)
    registered_model_name: str | None = None
    registered_model_version: int | None = None


# ---------------------------------------------------------------------------------------- helpers
def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the train extra
        raise InvalidInputError(
            "saving or loading a model needs torch, which is not installed",
            hint="pip install 'mlkit[train]' (or torch itself)",
        ) from exc
    return torch


def _unwrap(model: Any) -> Any:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    for _ in range(4):
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif type(model).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(model, "module"):
            model = model.module
        else:
            break
    return model


def _stable_dirs() -> list[str]:
    """Directories a fresh interpreter has on sys.path whatever the working directory: stdlib, site dirs, .pth entries."""
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            dirs.add(paths[key])
    if paths.get("platstdlib"):
        dirs.add(os.path.join(paths["platstdlib"], "lib-dynload"))  # the stdlib's extension modules
    site_dirs = list(getattr(site, "getsitepackages", lambda: [])())
    try:
        site_dirs.append(site.getusersitepackages())
    except Exception:  # site disabled
        pass
    dirs.update(site_dirs)
    for site_dir in site_dirs:
        try:
            names = [n for n in os.listdir(site_dir) if n.endswith(".pth")]
        except OSError:
            continue
        for name in names:
            try:
                lines = Path(site_dir, name).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    candidate = os.path.join(site_dir, line)
                    if os.path.isdir(candidate):
                        dirs.add(candidate)
    return [os.path.realpath(d) for d in dirs]


def _found_by_installed_finder(top: str, origin: str) -> bool:
    """True when a non-path finder (e.g. an editable install's) resolves `top` to this file."""
    import importlib.machinery

    for finder in sys.meta_path:
        if finder in (
            importlib.machinery.PathFinder,
            importlib.machinery.BuiltinImporter,
            importlib.machinery.FrozenImporter,
        ):
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(top, None)
        except Exception:
            continue
        if (
            spec is not None
            and spec.origin
            and origin.startswith(os.path.dirname(os.path.realpath(spec.origin)) + os.sep)
        ):
            return True
    return False


def _class_origin(cls: type) -> str | None:
    """The source file of a class: its module's __file__ if that module still holds this very class,
    else where its methods were compiled (sys.modules[cls.__module__] may since have been replaced
    by another file of the same name, e.g. three projects' `model.py`)."""
    module = sys.modules.get(cls.__module__)
    origin = getattr(module, "__file__", None)
    if origin and getattr(module, cls.__qualname__.split(".")[0], None) is _outermost(cls, module):
        return str(origin)
    for value in vars(cls).values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None and os.path.isfile(code.co_filename):
            return str(code.co_filename)
    return str(origin) if origin else None


def _outermost(cls: type, module: Any) -> Any:
    """The module-level object a (possibly nested) class hangs from, or a sentinel if it is not there."""
    parts = cls.__qualname__.split(".")
    target: Any = module
    for part in parts:
        target = getattr(target, part, None)
    return getattr(module, parts[0], None) if target is cls else object()


def importable_in_fresh_interpreter(module_name: str, origin: str | None = None) -> bool:
    """Whether `import module_name` would find the same file in a fresh interpreter started anywhere."""
    if module_name == "__main__":
        return False
    if origin is None:
        origin = getattr(sys.modules.get(module_name), "__file__", None)
    if not origin:
        return module_name.split(".")[0] in sys.builtin_module_names
    origin = os.path.realpath(origin)
    top = module_name.split(".")[0]
    for d in _stable_dirs():
        # Under a sys.path directory, and found there by that name: a .pth entry such as an
        # editable checkout's root holds other files too (tests/, scripts) that no import reaches.
        if origin.startswith(d + os.sep) and origin[len(d) + 1 :].split(os.sep)[0].split(".")[0] == top:
            return True
    return _found_by_installed_finder(module_name.split(".")[0], origin)


def _source_to_copy(cls: type) -> tuple[str, Path]:
    """(module name to import from code/, file or package dir to copy) for a class no fresh interpreter finds."""
    origin = _class_origin(cls)
    class_path = f"{cls.__module__}:{cls.__qualname__}"
    if not origin or not Path(origin).is_file():
        raise InvalidInputError(
            f"cannot save model class {class_path}: it has no source file (defined interactively?)",
            hint="define the class in a .py file, or make its module importable (pip install -e .)",
        )
    path = Path(origin).resolve()
    if cls.__module__ == "__main__":
        name = path.stem
        if not name.isidentifier():
            raise InvalidInputError(
                f"cannot save model class {cls.__qualname__} from {path.name}: {name!r} is not a valid module name",
                hint="rename the script (letters, digits, '_'), or move the class to an importable module",
            )
        return name, path
    parts = cls.__module__.split(".")
    if path.name == "__init__.py":
        return cls.__module__, path.parents[len(parts) - 1]  # the top-level package directory
    if len(parts) == 1:
        return cls.__module__, path
    return cls.__module__, path.parents[len(parts) - 2]


def _copy_code(target: Path, source: Path, dest_name: str | None = None) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
    dest = target / (dest_name or source.name)
    if dest.exists():
        return
    if source.is_dir():
        shutil.copytree(source, dest, ignore=ignore)
    else:
        shutil.copy2(source, dest)


def _as_tensors(example: Any, what: str = "input_example") -> tuple[Any, ...]:
    """The example as a tuple of tensors (one per forward argument)."""
    torch = _torch()
    items = example if isinstance(example, (tuple, list)) and not _is_number_list(example) else (example,)
    tensors = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.append(item.detach())
            continue
        try:
            tensors.append(torch.as_tensor(item))
        except Exception as exc:
            raise InvalidInputError(
                f"{what}[{i}] is a {type(item).__name__}, not a tensor or array",
                hint="pass a torch.Tensor, a numpy array, or a tuple of them (one per forward argument)",
            ) from exc
    return tuple(tensors)


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float, list)) for v in value)


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _flatten_tensors(value: Any) -> list[Any]:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flatten_tensors(v)]
    return []


def _tensor_specs(tensors: list[Any], prefix: str) -> str:
    specs = []
    for i, tensor in enumerate(tensors):
        shape = [-1, *tensor.shape[1:]] if tensor.dim() > 0 else []
        spec: dict[str, Any] = {
            "type": "tensor",
            "tensor-spec": {"dtype": _dtype_name(tensor), "shape": list(shape)},
        }
        if len(tensors) > 1:
            spec = {"name": f"{prefix}_{i}", **spec}
        specs.append(spec)
    return json.dumps(specs)


def _infer_signature(model: Any, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """Run the model once (eval, no_grad, on its device) and describe inputs and outputs as MLflow tensor specs."""
    torch = _torch()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(*(t.to(device) for t in inputs))
    except Exception as exc:
        raise InvalidInputError(
            f"running the model on input_example failed: {type(exc).__name__}: {exc}".splitlines()[0],
            hint="pass an input_example the model's forward() accepts (a batch, e.g. torch.randn(2, 3, 32, 32))",
        ) from exc
    finally:
        model.train(was_training)
    out_tensors = _flatten_tensors(outputs)
    return {
        "inputs": _tensor_specs(list(inputs), "input"),
        "outputs": _tensor_specs(out_tensors, "output") if out_tensors else None,
        "params": None,
    }


def _example_json(inputs: tuple[Any, ...]) -> dict[str, Any]:
    if len(inputs) == 1:
        return {"inputs": inputs[0].cpu().tolist()}
    return {"inputs": {f"input_{i}": t.cpu().tolist() for i, t in enumerate(inputs)}}


def _check_init_args(cls: type, init_args: Any, class_path: str) -> dict[str, Any]:
    if init_args is None:
        init_args = {}
    if not isinstance(init_args, dict):
        raise InvalidInputError(
            f"init_args of {class_path} must be a dict of constructor keyword arguments, not {type(init_args).__name__}",
            hint="e.g. init_args={'hidden': 128}",
        )
    for key, value in init_args.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"init_args[{key!r}] of {class_path} is a {type(value).__name__}, which is not JSON-serialisable",
                hint="pass plain numbers, strings, lists and dicts (e.g. a dataclass as dataclasses.asdict(cfg))",
            ) from exc
    try:
        inspect.signature(cls).bind(**init_args)
    except TypeError as exc:
        raise InvalidInputError(
            f"init_args do not match {class_path}'s constructor: {exc}",
            hint="set model.init_args (or pass init_args=) to the keyword arguments the constructor needs",
        ) from exc
    except ValueError:
        pass  # no signature to check (a C extension type)
    return json.loads(json.dumps(init_args))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _env_files(target: Path, torch_version: str) -> None:
    python = platform.python_version()
    pinned = f"torch=={torch_version.split('+')[0]}"
    files.write_atomic(
        target / "requirements.txt",
        f"# loading this model also needs mlkit (loader module mlkit.models.pyfunc)\n{pinned}\n",
    )
    files.write_atomic(
        target / "python_env.yaml",
        files.dump_yaml(
            {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}
        ),
    )
    files.write_atomic(
        target / "conda.yaml",
        files.dump_yaml(
            {
                "channels": ["conda-forge"],
                "dependencies": [f"python={python}", "pip", {"pip": [pinned]}],
                "name": "mlflow-env",
            }
        ),
    )


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------- save
def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    init_args: dict[str, Any] | None = None,
    input_example: Any = None,
    code_paths: list[str] | None = None,
    run_id: str | None = None,
    artifact_path: str | None = None,
) -> dict[str, Any]:
    """Write the model directory at `path` (which must not exist); returns the MLmodel content."""
    torch = _torch()
    model = _unwrap(model)
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(
            f"log_model needs a torch.nn.Module, got {type(model).__name__}", hint="pass the model itself"
        )
    cls = type(model)
    class_path = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise InvalidInputError(
            f"cannot save model class {class_path}: it is defined inside a function",
            hint="define the class at module level so it can be imported again",
        )
    if init_args is None:
        init_args = getattr(model, "init_args", None)
    init_args = _check_init_args(cls, init_args, class_path)
    state = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidInputError(
            f"state_dict of {class_path} holds non-tensor entries ({', '.join(bad[:3])}); mlkit saves tensors only",
            hint="keep extra state in init_args or a run artifact, not in get_extra_state()",
        )
    inputs = _as_tensors(input_example) if input_example is not None else None
    signature = _infer_signature(model, inputs) if inputs is not None else None

    target = Path(path)
    if target.exists():
        raise InvalidInputError(
            f"{target}: a model (or file) is already there", hint="log it under another artifact path"
        )
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        (staging / "data").mkdir(parents=True)
        weights = staging / WEIGHTS_FILE
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, weights)
        code_module = None
        if not importable_in_fresh_interpreter(cls.__module__, _class_origin(cls)):
            code_module, source = _source_to_copy(cls)
            (staging / CODE_DIR).mkdir()
            # a single-file module is stored under its module name (it may differ from the file's stem)
            _copy_code(staging / CODE_DIR, source, f"{code_module}.py" if source.is_file() else None)
        for extra in code_paths or []:
            extra_path = Path(extra)
            if not extra_path.exists():
                raise NotFoundError(
                    f"code_paths entry {extra} does not exist", hint="pass files or directories that exist"
                )
            (staging / CODE_DIR).mkdir(exist_ok=True)
            _copy_code(staging / CODE_DIR, extra_path.resolve())
        if inputs is not None:
            files.write_atomic(staging / INPUT_EXAMPLE_FILE, json.dumps(_example_json(inputs)))
        _env_files(staging, str(torch.__version__))
        code_dir = CODE_DIR if (staging / CODE_DIR).exists() else None
        mlmodel: dict[str, Any] = {
            "flavors": {
                "python_function": {
                    "data": "data",
                    "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                    "loader_module": "mlkit.models.pyfunc",
                    "python_version": platform.python_version(),
                    **({"code": code_dir} if code_dir else {}),
                },
                "pytorch": {
                    "code": code_dir,
                    "model_data": "data",
                    "pytorch_version": str(torch.__version__),
                },
                FLAVOR: {
                    "class": f"{code_module or cls.__module__}:{cls.__qualname__}",
                    "code_module": code_module,
                    "format_version": FORMAT_VERSION,
                    "init_args": init_args,
                    "mlkit_version": __version__,
                    "weights": WEIGHTS_FILE,
                    "weights_format": "torch-state-dict",
                    "weights_sha256": _sha256(weights),
                },
            },
            "model_uuid": uuid.uuid4().hex,
            "utc_time_created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
        if run_id:
            mlmodel["run_id"] = run_id
        if artifact_path:
            mlmodel["artifact_path"] = artifact_path
        if signature is not None:
            mlmodel["signature"] = signature
        if inputs is not None:
            mlmodel["saved_input_example_info"] = {
                "artifact_path": INPUT_EXAMPLE_FILE,
                "format": "tf-serving",
                "type": "ndarray",
            }
        mlmodel["model_size_bytes"] = _dir_size(staging)
        files.write_atomic(staging / "MLmodel", files.dump_yaml(mlmodel))
        try:
            os.rename(staging, target)  # a reader sees the whole model directory or none of it
        except OSError as exc:
            raise StoreError(
                f"{target}: cannot publish the model directory: {exc}", hint="is it there already?"
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return mlmodel


def log_model(
    model: Any,
    artifact_path: str = "model",
    *,
    init_args: dict[str, Any] | None = None,
    input_example: Any = None,
    code_paths: list[str] | None = None,
    registered_model_name: str | None = None,
    run_id: str | None = None,
) -> ModelInfo:
    """Save `model` as an MLflow-format directory in a run's artifacts (the active run by default)."""
    from mlkit.tracking.store import FileStore

    rel = validate_artifact_path(artifact_path)
    if not rel:
        raise InvalidInputError("artifact_path must not be empty", hint="e.g. 'model'")
    if run_id is None:
        from mlkit.tracking import fluent

        run_id = (fluent.active_run() or fluent.start_run()).info.run_id
    store = FileStore()
    parent, name = posixpath.split(rel)
    target = store.artifact_subdir(run_id, parent) / name  # each level checked: no link leads out
    if os.path.islink(target):
        raise InvalidInputError(
            f"{target}: is a symbolic link; mlkit never writes a model through a link in a run's artifacts",
            hint="remove the link, or log the model under another artifact path",
        )
    mlmodel = save_model(
        model,
        target,
        init_args=init_args,
        input_example=input_example,
        code_paths=code_paths,
        run_id=run_id,
        artifact_path=rel,
    )
    _append_log_model_history(store, run_id, mlmodel)
    flavor = mlmodel["flavors"][FLAVOR]
    info = ModelInfo(
        run_id=run_id,
        artifact_path=rel,
        model_uri=f"runs:/{run_id}/{rel}",
        path=target,
        model_uuid=mlmodel["model_uuid"],
        utc_time_created=mlmodel["utc_time_created"],
        class_path=flavor["class"],
        init_args=flavor["init_args"],
        code_module=flavor["code_module"],
        signature=mlmodel.get("signature"),
        flavors=mlmodel["flavors"],
    )
    if registered_model_name:
        from mlkit.models.ops import register_model

        version = register_model(info.model_uri, registered_model_name)
        info.registered_model_name = registered_model_name
        info.registered_model_version = version.version
    return info


def _append_log_model_history(store: Any, run_id: str, mlmodel: dict[str, Any]) -> None:
    """The `mlflow.log-model.history` run tag, which MLflow's UI reads to list a run's models."""
    try:
        current = json.loads(store.get_run(run_id).data.tags.get(LOG_MODEL_HISTORY_TAG) or "[]")
        if not isinstance(current, list):
            current = []
    except json.JSONDecodeError:
        current = []
    entry = {
        k: v
        for k, v in mlmodel.items()
        if k in ("run_id", "artifact_path", "utc_time_created", "model_uuid", "flavors")
    }
    entry["flavors"] = {k: v for k, v in mlmodel["flavors"].items() if k != FLAVOR}
    current.append(entry)
    store.set_tag(run_id, LOG_MODEL_HISTORY_TAG, json.dumps(current))


# ---------------------------------------------------------------------------------------- load
def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    """The MLmodel file of a model directory as a dict."""
    path = Path(model_dir) / "MLmodel"
    try:
        data = files.read_yaml(path)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{model_dir}: no MLmodel file there", hint="is this a model directory?") from exc
    return data


def _flavor(mlmodel: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    flavor = (mlmodel.get("flavors") or {}).get(FLAVOR)
    if not isinstance(flavor, dict):
        names = ", ".join(sorted(mlmodel.get("flavors") or {})) or "none"
        raise ModelLoadError(
            f"{model_dir}: not an mlkit model (flavors: {names})",
            hint="mlkit loads models saved with mlkit.log_model; load others with MLflow itself",
        )
    return flavor


def load_state_dict_safely(
    path: Path, expected_sha256: str | None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a tensors-only weights file; refuse a changed file or anything that needs unpickling."""
    torch = _torch()
    if not path.is_file():
        raise NotFoundError(
            f"{path}: the model's weights file is missing", hint="the model directory is incomplete"
        )
    if expected_sha256 and _sha256(path) != expected_sha256:
        raise UnsafeModelError(
            f"{path}: refused to load: the weights file changed after the model was logged (SHA-256 mismatch)",
            hint="log the model again from its run; never load weights from an untrusted source",
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
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
    return target


def _import_from_code_dir(code_dir: Path, module_name: str) -> Any:
    """Import `module_name` from the model's code/ copy, without clobbering a same-named module already loaded."""
    top = module_name.split(".")[0]
    copy = code_dir / f"{top}.py"
    loaded = sys.modules.get(module_name)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded is not None and loaded_file and copy.is_file() and Path(loaded_file).is_file():
        if _sha256(Path(loaded_file)) == _sha256(copy):
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
    from mlkit.models.uri import resolve_model_uri

    return load_model_from_dir(resolve_model_uri(uri).path, map_location=map_location)


def load_input_example(uri: str) -> tuple[Any, ...] | None:
    """The model's saved input example as tensors (dtypes from the signature), or None."""
    from mlkit.models.uri import resolve_model_uri

    model_dir = resolve_model_uri(uri).path
    mlmodel = read_mlmodel(model_dir)
    info = mlmodel.get("saved_input_example_info")
    if not info:
        return None
    torch = _torch()
    data = json.loads((model_dir / info["artifact_path"]).read_text(encoding="utf-8"))["inputs"]
    values = list(data.values()) if isinstance(data, dict) else [data]
    specs = json.loads((mlmodel.get("signature") or {}).get("inputs") or "[]")
    dtypes = [getattr(torch, s["tensor-spec"]["dtype"], None) for s in specs] or [None] * len(values)
    return tuple(torch.tensor(v, dtype=d) for v, d in zip(values, dtypes, strict=False))
