"""Models: save/load torch modules in MLflow's model format, URIs, registering and promoting.

Nothing here imports torch at import time; `log_model` and `load_model` import it when called.
"""

from __future__ import annotations

from mlkit.models.example import load_input_example
from mlkit.models.format import ModelLoadError, UnsafeModelError
from mlkit.models.load import load_model, load_model_from_dir
from mlkit.models.ops import ModelOverview, VersionOverview, download_model, model_overview, register_model
from mlkit.models.promote import PromoteResult, parse_condition, promote
from mlkit.models.save import ModelInfo, log_model, save_model
from mlkit.models.uri import ModelUri, ResolvedModel, parse_model_uri, resolve_model_uri

__all__ = [
    "ModelInfo",
    "ModelLoadError",
    "ModelOverview",
    "ModelUri",
    "PromoteResult",
    "ResolvedModel",
    "UnsafeModelError",
    "VersionOverview",
    "download_model",
    "load_input_example",
    "load_model",
    "load_model_from_dir",
    "log_model",
    "model_overview",
    "parse_condition",
    "parse_model_uri",
    "promote",
    "register_model",
    "resolve_model_uri",
    "save_model",
]
