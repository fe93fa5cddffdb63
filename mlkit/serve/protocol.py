"""MLflow's scoring protocol (mlflow/pyfunc/scoring_server in MLflow 3.18), without pandas.

A request body becomes a numpy array (or a dict of named arrays) and params; a failure becomes
`ScoringError(error_code, message, status)`, which the app sends as MLflow's
`{"error_code": ..., "message": ...}` JSON with the same HTTP status. Content-type problems are
415 with a text/plain body, as in MLflow. Messages are MLflow's; no stack trace is ever included.

Where MLflow fails on its own (CSV for a model with a tensor signature: `TensorSpec only supports
numpy types`), mlkit parses the CSV; everything MLflow accepts, mlkit accepts the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = [CONTENT_TYPE_CSV, CONTENT_TYPE_JSON, CONTENT_TYPE_PARQUET]

DF_RECORDS, DF_SPLIT, INSTANCES, INPUTS = "dataframe_records", "dataframe_split", "instances", "inputs"
SUPPORTED_FORMATS = {DF_RECORDS, DF_SPLIT, INSTANCES, INPUTS}
REQUIRED_INPUT_FORMAT = (
    f"The input must be a JSON dictionary with exactly one of the input fields {SUPPORTED_FORMATS}"
)
SCORING_PROTOCOL_CHANGE_INFO = (
    "IMPORTANT: The MLflow Model scoring protocol has changed in MLflow version 2.0. If you are"
    " seeing this error, you are likely using an outdated scoring request format. To resolve the"
    " error, either update your request format or adjust your MLflow Model's requirements file to"
    " specify an older version of MLflow (for example, change the 'mlflow' requirement specifier"
    " to 'mlflow==1.30.0'). If you are making a request using the MLflow client"
    " (e.g. via `mlflow.pyfunc.spark_udf()`), upgrade your MLflow client to a version >= 2.0 in"
    " order to use the new request format. For more information about the updated MLflow"
    " Model scoring protocol in MLflow 2.0, see"
    " https://mlflow.org/docs/latest/models.html#deploy-mlflow-models."
)
PREDICT_FAILED = (
    "Encountered an unexpected error while evaluating the model. Verify that the serialized input"
    " Dataframe is compatible with the model for inference."
)

# MLflow's ERROR_CODE_TO_HTTP_STATUS for the codes the scoring server uses
HTTP_STATUS = {
    "BAD_REQUEST": 400,
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "UNAUTHENTICATED": 401,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "TEMPORARILY_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}


class ScoringError(Exception):
    """A request the server answers with MLflow's error JSON."""

    def __init__(self, error_code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status or HTTP_STATUS.get(error_code, 500)

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()


class UnsupportedMedia(Exception):
    """A 415 answer: a text/plain body, as MLflow sends it."""


def bad_input(message: str) -> ScoringError:
    """MLflow's MlflowInvalidInputException: BAD_REQUEST, 'Invalid input. ...'."""
    return ScoringError("BAD_REQUEST", f"Invalid input. {message}")


@dataclass(frozen=True)
class TensorSpec:
    """One input of a tensor signature: dtype and shape (-1 = any)."""

    dtype: str
    shape: tuple[int, ...]
    name: str | None = None


@dataclass
class Request:
    """A parsed request: the model input and MLflow's optional params."""

    data: Any  # np.ndarray, or dict[str, np.ndarray] for named inputs
    params: dict[str, Any] | None


def input_specs(mlmodel: dict[str, Any]) -> list[TensorSpec]:
    """The tensor specs of an MLmodel signature's inputs ([] without a tensor signature)."""
    raw = (mlmodel.get("signature") or {}).get("inputs")
    try:
        items = json.loads(raw) if raw else []
    except (TypeError, json.JSONDecodeError):
        return []
    specs = []
    for item in items if isinstance(items, list) else []:
        spec = item.get("tensor-spec") if isinstance(item, dict) else None
        if item.get("type") != "tensor" or not isinstance(spec, dict):
            return []
        specs.append(TensorSpec(str(spec.get("dtype")), tuple(spec.get("shape") or ()), item.get("name")))
    return specs


# ------------------------------------------------------------------------------------ parsing
def check_content_type(content_type: str | None) -> str:
    """The mime type, or UnsupportedMedia with MLflow's 415 message."""
    parts = [p.strip() for p in (content_type or "").split(";")]
    mime = parts[0]
    values = {key: value for pair in parts[1:] for key, _, value in [pair.partition("=")]}
    if values.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMedia("The scoring server only supports UTF-8")
    unexpected = set(values) - {"charset"}
    if unexpected:
        raise UnsupportedMedia(
            f"Unrecognized content type parameters: {', '.join(unexpected)}. {SCORING_PROTOCOL_CHANGE_INFO}"
        )
    if mime not in CONTENT_TYPES:
        raise UnsupportedMedia(
            "This predictor only supports the following content types:"
            f" Types: {CONTENT_TYPES}. Got '{content_type}'."
        )
    return mime


def parse_request(body: bytes, content_type: str | None, specs: list[TensorSpec]) -> Request:
    """Body + content type -> Request, or ScoringError / UnsupportedMedia as MLflow answers."""
    mime = check_content_type(content_type)
    if mime == CONTENT_TYPE_CSV:
        return Request(_enforce(_parse_csv(body), specs), None)
    if mime == CONTENT_TYPE_PARQUET:
        return Request(_enforce(_parse_parquet(body), specs), None)
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_input(f"Ensure that input is a valid JSON formatted string. Error: '{exc!r}'") from exc
    if isinstance(decoded, list):
        raise bad_input(f"{REQUIRED_INPUT_FORMAT}. Received a list.")
    if not isinstance(decoded, dict):
        raise bad_input(f"{REQUIRED_INPUT_FORMAT}. Received unexpected input type '{type(decoded)}.")
    params = decoded.get("params")
    keys = [k for k in decoded if k in SUPPORTED_FORMATS]
    if len(keys) != 1:
        message = f"Received dictionary with input fields: {keys}"
        raise ScoringError(
            "BAD_REQUEST", f"{REQUIRED_INPUT_FORMAT}. {message}. {SCORING_PROTOCOL_CHANGE_INFO}"
        )
    if params is not None and not isinstance(params, dict):
        raise ScoringError(
            "INVALID_PARAMETER_VALUE", f"params must be a dictionary, got {type(params).__name__}"
        )
    key = keys[0]
    value = decoded[key]
    if key in (INSTANCES, INPUTS):
        return Request(_tf_serving(key, value, specs), params)
    frame = _frame_split(value) if key == DF_SPLIT else _frame_records(value)
    return Request(_enforce(frame, specs), params)


def _cast(value: Any, spec: TensorSpec | None) -> np.ndarray:
    try:
        if spec is not None and spec.dtype not in ("str", "object"):
            return np.asarray(value, dtype=np.dtype(spec.dtype))
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_input(str(exc)) from exc


def _tf_serving(key: str, value: Any, specs: list[TensorSpec]) -> Any:
    """`instances` (rows; rows of dicts become named columns) or `inputs` (a tensor or named tensors)."""
    named = {s.name: s for s in specs if s.name}
    if key == INSTANCES and isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for row in value for k in row))
        value = {c: [row.get(c) for row in value] for c in columns}
    if isinstance(value, dict):
        return {k: _check_shape(_cast(v, named.get(k)), named.get(k)) for k, v in value.items()}
    spec = specs[0] if len(specs) == 1 and not specs[0].name else None
    return _check_shape(_cast(value, spec), spec)


def _check_shape(array: np.ndarray, spec: TensorSpec | None) -> np.ndarray:
    if spec is None or spec.dtype in ("str", "object"):
        return array
    want = spec.shape
    if len(want) != array.ndim or any(w not in (-1, a) for w, a in zip(want, array.shape, strict=False)):
        data = np.array2string(array, threshold=20)
        raise ScoringError(
            "INVALID_PARAMETER_VALUE",
            f"Failed to predict data '{data}'. \nError: Failed to enforce schema of data '{data}' with schema "
            f"'[Tensor('{spec.dtype}', {tuple(want)})]'. Error: Shape of input {tuple(array.shape)} does not "
            f"match expected shape {tuple(want)}.",
        )
    return array


def _frame_split(value: Any) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(value, dict) or not isinstance(value.get("data", []), list):
        raise bad_input(
            "Dataframe could not be parsed: dataframe_split must be {'columns': [...], 'data': [[...]]}"
        )
    data = value.get("data") or []
    columns = value.get("columns") or (
        list(range(len(data[0]))) if data and isinstance(data[0], list) else []
    )
    rows = [row if isinstance(row, list) else [row] for row in data]
    return [str(c) for c in columns], rows


def _frame_records(value: Any) -> tuple[list[str], list[list[Any]]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise bad_input("Dataframe could not be parsed: dataframe_records must be a list of {column: value}")
    columns = list(dict.fromkeys(k for row in value for k in row))
    return [str(c) for c in columns], [[row.get(c, math.nan) for c in columns] for row in value]


def _parse_csv(body: bytes) -> tuple[list[str], list[list[Any]]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_input(f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'") from exc
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        raise ScoringError(
            "BAD_REQUEST",
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted "
            "Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method. Error: 'No columns to parse from file'",
        )
    header, data = rows[0], rows[1:]
    parsed = []
    for row in data:
        out: list[Any] = []
        for cell in row:
            try:
                out.append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                out.append(cell)
        parsed.append(out)
    return header, parsed


def _parse_parquet(body: bytes) -> tuple[list[str], list[list[Any]]]:
    try:
        # import budget: pandas loads only for a parquet request, and only where it is installed
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise UnsupportedMedia(
            f"Parquet input needs pandas and pyarrow, which this server lacks. Send one of {[CONTENT_TYPE_CSV, CONTENT_TYPE_JSON]}."
        ) from exc
    if not _safe_pyarrow():
        raise UnsupportedMedia(
            "Parquet input needs pyarrow 14.0.1 or later (earlier versions unpickle what a request "
            f"sends). Send one of {[CONTENT_TYPE_CSV, CONTENT_TYPE_JSON]}."
        )
    try:
        frame = pd.read_parquet(io.BytesIO(body), engine="pyarrow")
    except Exception as exc:
        raise ScoringError(
            "BAD_REQUEST",
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid Parquet Pandas "
            f"DataFrame produced using the `pandas.DataFrame.to_parquet()` method. Error: '{exc}'",
        ) from exc
    return [str(c) for c in frame.columns], frame.values.tolist()


def _safe_pyarrow() -> bool:
    """pyarrow is installed and past CVE-2023-47248 (extension-type metadata unpickled)."""
    try:
        # import budget: only for a parquet request
        from importlib.metadata import version

        # import budget: packaging too, only here
        from packaging.version import Version

        return Version(version("pyarrow")) >= Version("14.0.1")
    except Exception:  # not installed, or a version string packaging cannot read
        return False


def _enforce(frame: tuple[list[str], list[list[Any]]], specs: list[TensorSpec]) -> Any:
    """A data frame (columns, rows) -> the model input, as MLflow's tensor-schema enforcement does."""
    columns, rows = frame
    if not rows:
        raise ScoringError("BAD_REQUEST", "Input DataFrame is empty.")
    named = {s.name: s for s in specs if s.name}
    if named:
        missing = [n for n in named if n not in columns]
        if missing:
            raise ScoringError("INVALID_PARAMETER_VALUE", f"Model is missing inputs {missing}.")
        return {n: _cast([r[columns.index(n)] for r in rows], s) for n, s in named.items()}
    spec = specs[0] if len(specs) == 1 else None
    if spec is not None and len(columns) > 1 and tuple(spec.shape) != (-1, len(columns)):
        raise ScoringError(
            "INVALID_PARAMETER_VALUE",
            "This model contains a model signature with an unnamed input. Since the input data is a pandas "
            "DataFrame containing multiple columns, the input shape must be of the structure "
            f"(-1, number_of_dataframe_columns). Instead, the input DataFrame passed had {len(columns)} columns "
            f"and an input shape of {tuple(spec.shape)} with all values within the DataFrame of scalar type. "
            "Please adjust the passed in DataFrame to match the expected structure",
        )
    if spec is not None and len(columns) == 1 and tuple(spec.shape) not in ((-1,), (-1, 1)):
        raise ScoringError(
            "INVALID_PARAMETER_VALUE",
            f"Failed to predict data '{str(rows)[:200]}'. \nError: Failed to enforce schema of data '{str(rows)[:200]}' with schema '[Tensor('{spec.dtype}', {tuple(spec.shape)})]'. Error: The input "
            "pandas dataframe column 'None' contains scalar values, which requires the shape to be (-1,) or (-1, 1), "
            f"but got tensor spec shape of {tuple(spec.shape)}.",
        )
    if any(len(r) != len(columns) for r in rows):
        raise bad_input("Dataframe could not be parsed: every row must have one value per column")
    return _check_shape(_cast(rows, spec), spec)


# ------------------------------------------------------------------------------------ answers
def predictions_body(predictions: Any) -> bytes:
    """`{"predictions": ...}` as MLflow's NumpyEncoder writes it."""
    if isinstance(predictions, np.ndarray):
        predictions = predictions.tolist()
    return json.dumps({"predictions": predictions}).encode()
