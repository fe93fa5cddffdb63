"""Saving a model: `save_model` writes the model directory (staged, then renamed into place) and
`log_model` writes it into a run's artifacts, tags the run and optionally registers it."""

from __future__ import annotations

import inspect
import io
import json
import os
import platform
import posixpath
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlkit import __version__, fsio
from mlkit.errors import InvalidInputError, NotFoundError, StoreError
from mlkit.models.example import as_tensors, example_json, infer_signature, raw_example
from mlkit.models.format import (
    CODE_DIR,
    FLAVOR,
    FORMAT_VERSION,
    INPUT_EXAMPLE_FILE,
    LOG_MODEL_HISTORY_TAG,
    WEIGHTS_FILE,
    file_sha256,
    require_torch,
)
from mlkit.models.ops import register_model
from mlkit.models.source import class_origin, copy_code, importable_in_fresh_interpreter, source_to_copy
from mlkit.models.transform import Transform
from mlkit.models.transform import from_dict as transform_from_dict
from mlkit.tracking import files, fluent
from mlkit.tracking.store import FileStore
from mlkit.tracking.validation import validate_artifact_path


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


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    init_args: dict[str, Any] | None = None,
    input_example: Any = None,
    code_paths: list[str] | None = None,
    run_id: str | None = None,
    artifact_path: str | None = None,
    transform: Transform | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model directory at `path` (which must not exist); returns the MLmodel content.

    With a `transform`, `input_example` is raw input (what a client sends) and the signature
    describes raw input and mapped output."""
    torch = require_torch()
    model, init_args, state = _checked_module(model, init_args)
    cls = type(model)
    checked = transform_from_dict(transform)
    example_doc: dict[str, Any] | None = None
    if checked.input is not None or checked.output is not None:
        example_doc, signature = raw_example(model, checked, input_example)
    else:
        inputs = as_tensors(input_example) if input_example is not None else None
        signature = infer_signature(model, inputs) if inputs is not None else None
        example_doc = example_json(inputs) if inputs is not None else None

    target = Path(path)
    if target.exists():
        raise InvalidInputError(
            f"{target}: a model (or file) is already there", hint="log it under another artifact path"
        )
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        (staging / "data").mkdir(parents=True)
        weights = staging / WEIGHTS_FILE
        # serialized in memory, then written by fsio: a full disk is said plainly (torch.save
        # straight to the file fails with an opaque `enforce fail at inline_container.cc`)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
        fsio.atomic_write(weights, buffer.getbuffer())
        code_module = _copy_sources(staging, cls, code_paths)
        if example_doc is not None:
            files.write_atomic(staging / INPUT_EXAMPLE_FILE, json.dumps(example_doc))
        _env_files(staging, str(torch.__version__))
        mlmodel = _mlmodel(
            staging,
            cls,
            code_module=code_module,
            init_args=init_args,
            weights_sha256=file_sha256(weights),
            torch_version=str(torch.__version__),
        )
        if run_id:
            mlmodel["run_id"] = run_id
        if artifact_path:
            mlmodel["artifact_path"] = artifact_path
        if signature is not None:
            mlmodel["signature"] = signature
        if checked.input is not None or checked.output is not None:
            mlmodel["flavors"][FLAVOR]["transform"] = checked.to_dict()
        if example_doc is not None:
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


def _checked_module(
    model: Any, init_args: dict[str, Any] | None
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the plain module, its checked init args, its state dict), or the reason it cannot be saved."""
    torch = require_torch()
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
    checked = _check_init_args(cls, init_args, class_path)
    state = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidInputError(
            f"state_dict of {class_path} holds non-tensor entries ({', '.join(bad[:3])}); mlkit saves tensors only",
            hint="keep extra state in init_args or a run artifact, not in get_extra_state()",
        )
    return model, checked, state


def _copy_sources(staging: Path, cls: type, code_paths: list[str] | None) -> str | None:
    """Copy into code/ the class's source when a fresh interpreter would not find it, and every
    `code_paths` entry; returns the module name the class is imported from in code/, if copied."""
    code_module = None
    placed: dict[str, Path] = {}  # name in code/ -> the source copied there
    if not importable_in_fresh_interpreter(cls.__module__, class_origin(cls)):
        code_module, source = source_to_copy(cls)
        (staging / CODE_DIR).mkdir()
        # a single-file module is stored under its module name (it may differ from the file's stem)
        name = f"{code_module}.py" if source.is_file() else source.name
        placed[name] = source.resolve()
        copy_code(staging / CODE_DIR, source, name)
    for extra in code_paths or []:
        extra_path = Path(extra)
        if not extra_path.exists():
            raise NotFoundError(
                f"code_paths entry {extra} does not exist", hint="pass files or directories that exist"
            )
        source = extra_path.resolve()
        other = placed.setdefault(source.name, source)
        if other != source:  # two sources, one name in code/: one would silently not be saved
            raise InvalidInputError(
                f"code_paths entry {extra}: code/{source.name} is already {other}",
                hint="rename one of them, or pass the directory that holds both",
            )
        (staging / CODE_DIR).mkdir(exist_ok=True)
        copy_code(staging / CODE_DIR, source)
    return code_module


def _mlmodel(
    staging: Path,
    cls: type,
    *,
    code_module: str | None,
    init_args: dict[str, Any],
    weights_sha256: str,
    torch_version: str,
) -> dict[str, Any]:
    """The MLmodel content's flavors and identity (the optional keys are added by `save_model`)."""
    code_dir = CODE_DIR if (staging / CODE_DIR).exists() else None
    return {
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
                "pytorch_version": torch_version,
            },
            FLAVOR: {
                "class": f"{code_module or cls.__module__}:{cls.__qualname__}",
                "code_module": code_module,
                "format_version": FORMAT_VERSION,
                "init_args": init_args,
                "mlkit_version": __version__,
                "weights": WEIGHTS_FILE,
                "weights_format": "torch-state-dict",
                "weights_sha256": weights_sha256,
            },
        },
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }


def log_model(
    model: Any,
    artifact_path: str = "model",
    *,
    init_args: dict[str, Any] | None = None,
    input_example: Any = None,
    code_paths: list[str] | None = None,
    registered_model_name: str | None = None,
    run_id: str | None = None,
    transform: Transform | dict[str, Any] | None = None,
) -> ModelInfo:
    """Save `model` as an MLflow-format directory in a run's artifacts (the active run by default)."""

    rel = validate_artifact_path(artifact_path)
    if not rel:
        raise InvalidInputError("artifact_path must not be empty", hint="e.g. 'model'")
    if run_id is None:
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
        transform=transform,
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
