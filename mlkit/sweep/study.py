"""Optuna, behind four calls: the sweep's study (a journal file in the sweep run's artifacts, so
`resume` and several drivers share it), asking for a trial, reporting a step, telling the end.

Imported only by the sweep driver: `mlkit --help` and `mlkit run` never load Optuna.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mlkit.errors import UsageError
from mlkit.sweep.space import Dimension, format_value

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband")


def _optuna() -> Any:
    try:
        # import budget: Optuna loads only when a sweep is driven
        import optuna
    except ImportError as exc:
        raise UsageError(
            "mlkit sweep needs Optuna, which is not installed", hint="pip install 'mlkit[sweep]'"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def distributions(space: list[Dimension]) -> dict[str, Any]:
    """Optuna's distribution for every swept (not fixed) dimension."""
    optuna = _optuna()
    dist = optuna.distributions
    out: dict[str, Any] = {}
    for d in space:
        if d.kind == "fixed":
            continue
        if d.kind in ("list", "range", "choice"):
            out[d.name] = dist.CategoricalDistribution(list(d.values))
        elif d.kind == "int":
            out[d.name] = dist.IntDistribution(int(d.low), int(d.high))
        else:
            out[d.name] = dist.FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
    return out


def _typed(space: list[Dimension], params: dict[str, str]) -> dict[str, Any]:
    """A trial's string params as the values Optuna's distributions hold."""
    out: dict[str, Any] = {}
    for d in space:
        if d.kind == "fixed" or d.name not in params:
            continue
        value = params[d.name]
        out[d.name] = (
            int(value) if d.kind == "int" else float(value) if d.kind in ("uniform", "loguniform") else value
        )
    return out


def sampler(method: str, seed: int | None) -> Any:
    optuna = _optuna()
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # grid/random trials are enqueued: never sampled


def pruner(kind: str | None, *, warmup: int, startup: int) -> Any:
    optuna = _optuna()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup))
    return optuna.pruners.NopPruner()


def open_study(path: Path, name: str, spec: dict[str, Any]) -> Any:
    """The sweep's study in the journal file `path` (created on first use; `spec` is the sweep's)."""
    optuna = _optuna()
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = optuna.storages.journal
    storage = journal.JournalStorage(journal.JournalFileBackend(str(path)))
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=spec["direction"],
        sampler=sampler(spec["method"], spec.get("seed")),
        pruner=pruner(
            spec.get("prune"), warmup=spec.get("prune_warmup", 0), startup=spec.get("prune_startup", 5)
        ),
        load_if_exists=True,
    )


def random_trials(space: list[Dimension], n: int, seed: int | None) -> list[dict[str, str]]:
    """`n` assignments drawn by Optuna's RandomSampler(seed): the same seed gives the same list."""
    optuna = _optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    dists = distributions(space)
    by_name = {d.name: d for d in space}
    out = []
    for _ in range(n):
        trial = study.ask(fixed_distributions=dists)
        out.append({k: format_value(by_name[k], v) for k, v in trial.params.items()})
        study.tell(trial, 0.0)
    return out


def ask(study: Any, space: list[Dimension], params: dict[str, str] | None) -> tuple[Any, dict[str, str]]:
    """A new trial in the study: with `params` (a grid point, a rerun) those values, else the
    sampler's suggestion. Returns Optuna's trial and its params as strings (swept ones only)."""
    dists = distributions(space)
    if params is not None:
        study.enqueue_trial(_typed(space, params), skip_if_exists=False)
    trial = study.ask(fixed_distributions=dists)
    by_name = {d.name: d for d in space}
    return trial, {k: format_value(by_name[k], v) for k, v in trial.params.items()}


def trial_of(study: Any, number: int) -> Any:
    """Optuna's live trial `number` of the study (for a trial another driver asked for)."""
    optuna = _optuna()
    storage = study._storage  # Optuna has no public lookup by number for a running trial
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def report(trial: Any, step: int, value: float) -> bool:
    """Report an intermediate value; True when the pruner says this trial should stop."""
    trial.report(value, step)
    return bool(trial.should_prune())


def tell(study: Any, number: int, state: str, value: float | None = None) -> None:
    """End trial `number`: COMPLETE with `value`, PRUNED or FAIL (a trial already ended is left)."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    try:
        if state == "COMPLETE" and value is not None:
            study.tell(number, value)
        else:
            study.tell(number, state=states.PRUNED if state == "PRUNED" else states.FAIL)
    except (ValueError, RuntimeError):  # told already (by another driver, or before a crash)
        pass
