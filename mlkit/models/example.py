"""The input example: as tensors, the MLflow signature inferred by running the model on it once,
its `input_example.json`, and reading it back as tensors."""

from __future__ import annotations

import json
import os
from typing import Any

from mlkit.errors import InvalidInputError
from mlkit.models.format import ModelLoadError, UnsafeModelError, read_mlmodel, require_torch
from mlkit.models.uri import resolve_model_uri


def as_tensors(example: Any, what: str = "input_example") -> tuple[Any, ...]:
    """The example as a tuple of tensors (one per forward argument)."""
    torch = require_torch()
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
    torch = require_torch()
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


def infer_signature(model: Any, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """Run the model once (eval, no_grad, on its device) and describe inputs and outputs as MLflow tensor specs."""
    torch = require_torch()
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


def example_json(inputs: tuple[Any, ...]) -> dict[str, Any]:
    if len(inputs) == 1:
        return {"inputs": inputs[0].cpu().tolist()}
    return {"inputs": {f"input_{i}": t.cpu().tolist() for i, t in enumerate(inputs)}}


def load_input_example(uri: str) -> tuple[Any, ...] | None:
    """The model's saved input example as tensors (dtypes from the signature), or None."""

    model_dir = resolve_model_uri(uri).path
    mlmodel = read_mlmodel(model_dir)
    info = mlmodel.get("saved_input_example_info")
    if not info:
        return None
    torch = require_torch()
    path = model_dir / str(info.get("artifact_path") if isinstance(info, dict) else "")
    if not os.path.realpath(path).startswith(os.path.realpath(model_dir) + os.sep):
        raise UnsafeModelError(
            f"{model_dir}/MLmodel: input example path {path.name!r} leaves the model directory",
            hint="never load a model directory from an untrusted source",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["inputs"]
        values = list(data.values()) if isinstance(data, dict) else [data]
        specs = json.loads((mlmodel.get("signature") or {}).get("inputs") or "[]")
        dtypes = [_dtype(torch, s) for s in specs] or [None] * len(values)
        return tuple(torch.tensor(v, dtype=d) for v, d in zip(values, dtypes, strict=False))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a raw (string) example has no tensor form
        raise ModelLoadError(
            f"{path}: cannot read the input example as tensors: {type(exc).__name__}: {exc}".splitlines()[0][
                :240
            ],
            hint="the model's input example is raw input (see its transform) or the file is damaged",
        ) from exc


def _dtype(torch: Any, spec: Any) -> Any:
    """A tensor-spec's dtype as torch's (only torch dtypes, never another attribute), or None."""
    name = spec.get("tensor-spec", {}).get("dtype") if isinstance(spec, dict) else None
    value = getattr(torch, name, None) if isinstance(name, str) else None
    return value if isinstance(value, torch.dtype) else None


def raw_example(
    model: Any, transform: Any, example: Any
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """For a model with a transform: (input_example.json content, signature) from a raw example
    (what a client sends). The model runs once on the transformed example, as `predict` would."""
    if example is None:
        return None, None
    # import budget: numpy and the pyfunc wrapper load only when a model with a transform is saved
    import numpy as np

    # pyfunc imports this module: imported here, there is no cycle
    from mlkit.models.pyfunc import TorchPyfuncModel

    torch = require_torch()
    raw = example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    was_training = model.training
    model.eval()
    try:
        output = TorchPyfuncModel(model, transform).predict(raw)
    except Exception as exc:
        raise InvalidInputError(
            f"running the model on input_example through its transform failed: {type(exc).__name__}: {exc}".splitlines()[
                0
            ],
            hint="pass raw input as a client would send it (e.g. rows of 64 pixel values 0..16)",
        ) from exc
    finally:
        model.train(was_training)
    doc = {"inputs": raw.tolist()}
    if raw.dtype.kind in "US" or raw.dtype == object:
        return doc, None  # strings: MLflow's tensor specs have no string dtype it would accept here
    signature = {
        "inputs": json.dumps([_array_spec(raw)]),
        "outputs": json.dumps([_array_spec(np.asarray(output))]),
        "params": None,
    }
    return doc, signature


def _array_spec(array: Any) -> dict[str, Any]:
    kind = array.dtype.kind
    dtype = "str" if kind in "USO" else str(array.dtype)
    shape = [-1, *array.shape[1:]] if array.ndim > 0 else []
    return {"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}
