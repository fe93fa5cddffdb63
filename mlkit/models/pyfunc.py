"""The `python_function` loader MLflow calls (`loader_module: mlkit.models.pyfunc`).

`mlflow.pyfunc.load_model(uri)` imports this module and calls `_load_pyfunc(data_path)`; the
wrapper's `predict` takes arrays or tensors and returns numpy arrays, as pyfunc models do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlkit.models.load import load_model_from_dir


class TorchPyfuncModel:
    """A loaded mlkit model behind MLflow's pyfunc `predict` interface."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Run the model under no_grad; a tuple/list input is passed as positional arguments."""
        # import budget: torch loads only when the model predicts
        import torch

        items = model_input if isinstance(model_input, (tuple, list)) else (model_input,)
        tensors = [t if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in items]
        device = next(self.model.parameters(), torch.empty(0)).device
        with torch.no_grad():
            output = self.model(*(t.to(device) for t in tensors))
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.detach().cpu().numpy()

    def unwrap_python_model(self) -> Any:
        return self.model


def _load_pyfunc(path: str) -> TorchPyfuncModel:
    """MLflow passes the flavor's `data` directory; the model directory is its parent."""
    data_dir = Path(path)
    model_dir = data_dir.parent if data_dir.name == "data" else data_dir
    return TorchPyfuncModel(load_model_from_dir(model_dir))
