"""The `python_function` loader MLflow calls (`loader_module: mlkit.models.pyfunc`).

`mlflow.pyfunc.load_model(uri)` imports this module and calls `_load_pyfunc(data_path)`; the
wrapper's `predict` takes arrays, tensors or a DataFrame and returns numpy arrays, as pyfunc
models do. When the model carries a transform (mlkit.models.transform), `predict` takes raw
input and returns mapped output (e.g. labels), in MLflow's server and in `mlkit models serve` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlkit.models.format import FLAVOR, read_mlmodel
from mlkit.models.load import load_model_from_dir
from mlkit.models.transform import Transform, from_dict, map_output, prepare_input


class TorchPyfuncModel:
    """A loaded mlkit model behind MLflow's pyfunc `predict` interface."""

    def __init__(self, model: Any, transform: Transform | None = None) -> None:
        self.model = model
        self.transform = transform or Transform()

    @property
    def device(self) -> Any:
        # import budget: torch loads only when the model predicts
        import torch

        return next(self.model.parameters(), torch.empty(0)).device

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Run the model under no_grad on raw input; a tuple/list of arrays or a dict of named
        arrays is passed as positional arguments (without a transform)."""
        # import budget: torch loads only when the model predicts
        import numpy as np
        import torch

        if hasattr(model_input, "to_numpy") and hasattr(model_input, "columns"):  # a pandas DataFrame
            model_input = model_input.to_numpy()
        device = self.device
        if self.transform.input is not None:
            batches = prepare_input(self.transform, model_input, torch, device)
        else:
            if isinstance(model_input, dict):
                model_input = tuple(model_input.values())
            items = model_input if isinstance(model_input, (tuple, list)) else (model_input,)
            batches = [tuple(prepare_input(self.transform, t, torch, device)[0] for t in items)]
        outputs = []
        with torch.no_grad():
            for batch in batches:
                args = batch if isinstance(batch, tuple) else (batch,)
                outputs.append(map_output(self.transform, self.model(*args), torch))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def unwrap_python_model(self) -> Any:
        return self.model


def load_predictor(model_dir: str | Path, *, map_location: Any = "cpu") -> TorchPyfuncModel:
    """The model in `model_dir` with its transform, on `map_location`."""
    mlmodel = read_mlmodel(Path(model_dir))
    transform = from_dict(((mlmodel.get("flavors") or {}).get(FLAVOR) or {}).get("transform"))
    return TorchPyfuncModel(load_model_from_dir(model_dir, map_location=map_location), transform)


def _load_pyfunc(path: str) -> TorchPyfuncModel:
    """MLflow passes the flavor's `data` directory; the model directory is its parent."""
    data_dir = Path(path)
    model_dir = data_dir.parent if data_dir.name == "data" else data_dir
    return load_predictor(model_dir)
