"""What a model needs to predict on raw input: an input transform and an output mapping.

Both are plain JSON data kept in the MLmodel file (`flavors.mlkit.transform`), never code and
never a pickle, so a model stays weights-only. `mlkit.models.pyfunc` (what `mlflow models serve`
and `mlkit models serve` call) applies them around `forward`:

    input  {"kind": "affine", "scale": 0.125, "offset": -1.0, "shape": [1, 8, 8], "dtype": "float32"}
           each row (e.g. 64 raw pixel values 0..16) -> row * scale + offset, reshaped to `shape`
    input  {"kind": "bytes"}
           each row a string -> its UTF-8 bytes as int64 token ids (a byte-level language model)
    output {"kind": "labels", "labels": [0, 1, ..., 9]}
           logits (B, K) -> labels[argmax]; (B, T, K) -> the label at the last position
    output {"kind": "affine", "scale": 8.0, "offset": 8.0}
           outputs -> outputs * scale + offset (e.g. a generator's [-1, 1] back to pixel values)

`Transform.to_dict()` is what `log_model(..., transform=...)` stores; `Transform.from_dict`
checks a stored one field by field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlkit.errors import InvalidInputError

INPUT_KINDS = ("affine", "bytes")
OUTPUT_KINDS = ("labels", "affine")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")


class PredictInputError(InvalidInputError):
    """A request's data does not fit the model's input (shape, type): the client's mistake."""


@dataclass(frozen=True)
class InputTransform:
    """Raw rows -> the tensor `forward` takes."""

    kind: str = "affine"
    scale: float = 1.0
    offset: float = 0.0
    shape: tuple[int, ...] | None = None  # one row's shape for forward (the batch dim is added)
    dtype: str = "float32"


@dataclass(frozen=True)
class OutputMapping:
    """`forward`'s output -> what a client gets back."""

    kind: str = "labels"
    labels: tuple[Any, ...] = ()
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Transform:
    """The input transform and output mapping a model carries (either may be None)."""

    input: InputTransform | None = None
    output: OutputMapping | None = field(default=None)

    @classmethod
    def image_classifier(
        cls, *, scale: float, offset: float, shape: tuple[int, ...], labels: list[Any] | None = None
    ) -> Transform:
        """Raw pixels (rows of C*H*W values, or C x H x W arrays) -> scaled images; logits -> labels."""
        return cls(
            InputTransform("affine", float(scale), float(offset), tuple(int(s) for s in shape)),
            OutputMapping("labels", tuple(labels)) if labels else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in MLmodel (checked: a bad field raises InvalidInputError)."""
        return _plain(from_dict(_plain(self)))


def _plain(t: Transform) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if t.input is not None:
        data["input"] = {"kind": t.input.kind}
        if t.input.kind == "affine":
            data["input"].update(scale=t.input.scale, offset=t.input.offset, dtype=t.input.dtype)
            if t.input.shape is not None:
                data["input"]["shape"] = list(t.input.shape)
    if t.output is not None:
        if t.output.kind == "labels":
            data["output"] = {"kind": "labels", "labels": list(t.output.labels)}
        else:
            data["output"] = {"kind": "affine", "scale": t.output.scale, "offset": t.output.offset}
    return data


def _bad(where: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"transform.{where}: {why}",
        hint="see docs/models.md, 'Raw input in, labels out' for the transform's fields",
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(where, f"{value!r} is not a finite number")
    return float(value)


def from_dict(data: Any) -> Transform:
    """Check a transform read from MLmodel (or given to log_model) and build it."""
    if data is None or data == {}:
        return Transform()
    if isinstance(data, Transform):
        data = _plain(data)
    if not isinstance(data, dict) or set(data) - {"input", "output"}:
        raise _bad("", "expected a mapping with 'input' and/or 'output'")
    inp = out = None
    if data.get("input") is not None:
        raw = data["input"]
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if kind not in INPUT_KINDS:
            raise _bad("input.kind", f"{kind!r} is not one of {', '.join(INPUT_KINDS)}")
        shape = raw.get("shape")
        if shape is not None and (
            not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in shape)
        ):
            raise _bad("input.shape", f"{shape!r} is not a list of positive integers")
        dtype = raw.get("dtype", "float32")
        if dtype not in DTYPES:
            raise _bad("input.dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
        inp = InputTransform(
            kind,
            _number(raw.get("scale", 1.0), "input.scale"),
            _number(raw.get("offset", 0.0), "input.offset"),
            tuple(shape) if shape is not None else None,
            dtype,
        )
    if data.get("output") is not None:
        raw = data["output"]
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if kind not in OUTPUT_KINDS:
            raise _bad("output.kind", f"{kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        labels = raw.get("labels") or []
        if kind == "labels" and (
            not isinstance(labels, (list, tuple))
            or not labels
            or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in labels)
        ):
            raise _bad("output.labels", "expected a non-empty list of strings or integers")
        out = OutputMapping(
            kind,
            tuple(labels),
            _number(raw.get("scale", 1.0), "output.scale"),
            _number(raw.get("offset", 0.0), "output.offset"),
        )
    return Transform(inp, out)


# ------------------------------------------------------------------------------------ applying
def prepare_input(transform: Transform, data: Any, torch: Any, device: Any) -> list[Any]:
    """Raw request data -> the forward() argument batches: one tensor, or for `bytes` input one
    (1, T) tensor per row (rows of different lengths are never padded together)."""
    import numpy as np  # import budget: numpy loads with torch, when a model predicts

    spec = transform.input
    if spec is not None and spec.kind == "bytes":
        rows = np.asarray(data, dtype=object).reshape(-1).tolist()
        if not rows or not all(isinstance(r, str) and r for r in rows):
            raise PredictInputError(
                "this model takes non-empty strings (one per row)", hint='e.g. {"inputs": ["hello wor"]}'
            )
        return [torch.tensor([list(r.encode("utf-8"))], dtype=torch.int64, device=device) for r in rows]
    if isinstance(data, torch.Tensor):
        array = data
    else:
        try:
            array = torch.as_tensor(np.asarray(data, dtype=np.float64 if spec is not None else None))
        except (TypeError, ValueError) as exc:
            raise PredictInputError(
                f"the input is not a numeric array: {exc}".splitlines()[0], hint="send numbers"
            ) from exc
    if spec is None:
        return [array.to(device)]
    if spec.shape is not None:
        per_row = math.prod(spec.shape)
        if array.dim() == 0 or array.numel() % per_row or array.shape[0] * per_row != array.numel():
            raise PredictInputError(
                f"each row must hold {per_row} values (shape {list(spec.shape)}), got an input of shape {list(array.shape)}",
                hint=f"send one row of {per_row} numbers per example",
            )
        array = array.reshape(-1, *spec.shape)
    dtype = getattr(torch, spec.dtype)
    if spec.scale == 1 and spec.offset == 0:
        return [array.to(device=device, dtype=dtype)]
    scaled = array.to(device=device, dtype=torch.float64) * spec.scale + spec.offset
    if dtype.is_floating_point:
        return [scaled.to(dtype)]
    return [scaled.round().to(dtype)]  # an integer input (token ids): the arithmetic in float, then back


def map_output(transform: Transform, output: Any, torch: Any) -> Any:
    """forward()'s output tensor -> a numpy array of what the client gets back."""
    import numpy as np  # import budget: numpy loads with torch, when a model predicts

    if isinstance(output, (tuple, list)):
        output = output[0]
    spec = transform.output
    if spec is None:
        return output.detach().float().cpu().numpy() if output.is_floating_point() else output.cpu().numpy()
    if spec.kind == "affine":
        return (output.detach().float() * spec.scale + spec.offset).cpu().numpy()
    logits = output.detach()
    if logits.dim() == 3:  # (B, T, K): a sequence model; the prediction is the next token's label
        logits = logits[:, -1]
    index = logits.argmax(-1).cpu().numpy()
    labels = np.asarray(spec.labels, dtype=object)
    if index.size and int(index.max()) >= len(labels):
        raise PredictInputError(
            f"the model predicted class {int(index.max())} but has {len(labels)} labels", hint=""
        )
    return np.asarray(labels[index].tolist())


# ------------------------------------------------------------------------------------ for trainers
def image_scaling(source: str) -> tuple[float, float]:
    """(scale, offset) that take raw pixels of a `mlkit.train.data.load_images` source to the
    [-1, 1] floats the trainers use: digits hold 0..16, image folders and integer .npz 0..255,
    float .npz 0..1; synthetic images are made in [-1, 1] already."""
    if source == "digits":
        return 1 / 8, -1.0
    if source == "synthetic":
        return 1.0, 0.0
    if source.endswith(".npz"):
        import numpy as np  # import budget: only for a trainer logging a model of .npz images

        with np.load(source) as f:
            x = f["x"]
            if not np.issubdtype(x.dtype, np.integer) and float(x.max()) <= 1.0:
                return 2.0, -1.0
    return 1 / 127.5, -1.0


def image_labels(source: str, num_classes: int) -> list[Any]:
    """Class labels of an image source: the class folder names of a folder, else 0..num_classes-1."""
    # import budget: pathlib only when a trainer logs a model
    from pathlib import Path

    root = Path(source)
    if source not in ("digits", "synthetic") and root.is_dir():
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    return list(range(num_classes))


def image_classifier_for(source: str, shape: tuple[int, ...], num_classes: int) -> Transform:
    """The transform of a classifier trained on `load_images(source)`: raw pixels in, labels out."""
    scale, offset = image_scaling(source)
    return Transform.image_classifier(
        scale=scale, offset=offset, shape=shape, labels=image_labels(source, num_classes)
    )


def image_generator_for(source: str) -> Transform:
    """The transform of a generator trained on `load_images(source)`: [-1, 1] images -> raw pixels."""
    scale, offset = image_scaling(source)
    return Transform(None, OutputMapping("affine", scale=1 / scale, offset=-offset / scale))


def byte_lm() -> Transform:
    """The transform of a byte-level language model: strings in, the most likely next character out."""
    labels = [bytes([i]).decode("latin-1") for i in range(256)]
    return Transform(InputTransform("bytes"), OutputMapping("labels", tuple(labels)))


def raw_rows(transform: Transform, x: Any) -> Any:
    """Model-input images (N, C, H, W) back to the raw rows a client sends (N, C*H*W), as numpy."""
    spec = transform.input
    assert spec is not None and spec.kind == "affine"
    raw = (x.detach().float().cpu() - spec.offset) / spec.scale
    return raw.reshape(len(raw), -1).double().numpy()
