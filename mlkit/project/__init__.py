"""MLproject files (MLflow's format) parsed into frozen dataclasses; commands built without injection."""

from __future__ import annotations

from mlkit.project.command import ResolvedCommand, check_undeclared, shell_argv
from mlkit.project.load import find_mlproject, load_project, survey_project
from mlkit.project.model import PARAM_TYPES, EntryPoint, Parameter, Project

__all__ = [
    "PARAM_TYPES",
    "EntryPoint",
    "Parameter",
    "Project",
    "ResolvedCommand",
    "check_undeclared",
    "find_mlproject",
    "load_project",
    "shell_argv",
    "survey_project",
]
