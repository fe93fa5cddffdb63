"""The sweep driver: a parent run, its trials as ordinary runs, `parallel` of them at a time.

    prepared = prepare(options)              # checks everything; creates nothing (exit 2 when bad)
    sweep_id = create_sweep(prepared, store) # the parent run, its spec and its Optuna journal
    outcome = Driver(store, sweep_id, launcher, notify).drive(timeout)

A trial is a run the driver creates SCHEDULED (tags `mlflow.parentRunId`, `mlkit.sweep.trial_key`,
`mlkit.sweep.slot`, `mlkit.sweep.optuna_trial`) and a launcher starts with the ordinary supervisor
(`mlkit run --run-id`), which leases its own GPUs. The sweep's slots (grid points, random draws,
or the N suggestions of a sequential sampler) are claimed under a lock in the parent's artifacts,
so `resume` and several drivers share one sweep without running a trial twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlkit import fsio, procid, settings
from mlkit.errors import ExitCode, MlkitError, NotFoundError, UsageError
from mlkit.sweep import space as sp
from mlkit.sweep.launch import (
    AdoptedTrial,
    Launcher,
    LocalLauncher,
    TrialHandle,
    TrialLaunch,
    TrialStartError,
    supervisor_of,
)
from mlkit.sweep.records import (
    CLAIM_LOCK,
    FAILURE_TAG,
    PARENT_TAG,
    SLURM_JOB_TAG,
    SPEC_FILE,
    STUDY_FILE,
    TAG_DIRECTION,
    TAG_DRIVER,
    TAG_KEY,
    TAG_METHOD,
    TAG_METRIC,
    TAG_OPTUNA,
    TAG_PRUNED,
    TAG_SLOT,
    TAG_SPACE,
    TAG_TRIALS,
    is_pruned,
    load_spec,
    trial_runs,
)

Notify = Callable[[str], None]

POLL_S = 0.1
HEARTBEAT_S = 30.0
PARENT_CHECK_S = 1.0  # how often a driver reads whether someone else ended the parent
DEFAULT_TRIAL_WAIT = 7 * 24 * 3600.0
MAX_SEED = 2**32 - 1  # the samplers' seed is a numpy RandomState seed


@dataclass(frozen=True)
class SweepOptions:
    """What `mlkit sweep DIR ...` was asked (None: the default)."""

    project_dir: Path
    params: dict[str, str]
    entry_point: str = "main"
    method: str | None = None
    trials: int | None = None
    metric: str | None = None
    direction: str = "minimize"
    parallel: int | None = None  # None: one per free GPU set, 1 on a box without GPUs
    gpus_per_trial: int | None = None  # None: 1 where NVML sees GPUs, else 0 (CPU)
    prune: str | None = None
    prune_warmup: int = 0
    prune_startup: int = 5
    seed: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None
    store: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    run_name: str | None = None
    env_manager: str = "auto"
    system_metrics_interval: float | None = None
    backend: str = "local"
    backend_config: str | None = None  # --backend slurm: sbatch options (KEY=VALUE,... or a JSON file)


@dataclass(frozen=True)
class Prepared:
    """A checked sweep: its spec (saved as the parent's `sweep/spec.json`) and parsed space."""

    spec: dict[str, Any]
    space: list[sp.Dimension]
    options: SweepOptions


@dataclass
class SweepOutcome:
    """How a drive ended: the parent's status, the reason, the exit code and trial counts."""

    sweep_id: str
    status: str
    exit_code: int
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    launched: int = 0


# ---------------------------------------------------------------------------------------- prepare
def _gpu_count() -> int:
    # import budget: the NVML probe loads only when a sweep picks its defaults
    from mlkit.gpu import probe

    return len([g for g in probe().gpus if not getattr(g, "lost", False)])


def _check_flags(options: SweepOptions) -> None:
    """The flags that need no project: direction, pruner, backend, counts."""
    if options.direction not in ("minimize", "maximize"):
        raise UsageError(f"direction {options.direction!r}", hint="use --minimize or --maximize")
    if options.prune is not None and options.prune not in ("median", "hyperband"):
        raise UsageError(
            f"--prune {options.prune}: unknown pruner", hint="use --prune median or --prune hyperband"
        )
    if options.backend not in ("local", "slurm"):
        raise UsageError(f"--backend {options.backend}: unknown backend", hint="use --backend local or slurm")
    for flag, value in (("--parallel", options.parallel), ("--trials", options.trials)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be 1 or more", hint=f"e.g. {flag} 4")
    if options.trials is not None and options.trials > sp.MAX_GRID:
        raise UsageError(f"--trials {options.trials}: more than {sp.MAX_GRID} trials",
                         hint=f"use at most --trials {sp.MAX_GRID}, or split the space")  # fmt: skip
    if options.seed is not None and not 0 <= options.seed <= MAX_SEED:
        raise UsageError(f"--seed {options.seed}: must be 0 to {MAX_SEED}", hint="e.g. --seed 0")
    for flag, value in (("--prune-startup", options.prune_startup), ("--prune-warmup", options.prune_warmup)):
        if value < 0:
            raise UsageError(f"{flag} {value}: must be 0 or more", hint=f"e.g. {flag} 5")
    if options.gpus_per_trial is not None and options.gpus_per_trial < 0:
        raise UsageError(
            f"--gpus-per-trial {options.gpus_per_trial}: must be 0 or more", hint="0 runs trials on CPU"
        )
    if not options.params:
        raise UsageError("nothing to sweep", hint="give -P NAME=VALUES, e.g. -P lr=1e-4,1e-3")
    _check_trial_flags(options)


def _check_trial_flags(options: SweepOptions) -> None:
    """The flags each trial's `mlkit run` (and the metric's reader) would refuse: refused before the
    sweep's parent run exists, as `mlkit run` refuses them before its run does."""
    # import budget: the runner's rules, reused (its options module is light)
    from mlkit.runner.options import check_env_manager, check_metrics_interval, check_timeout

    check_env_manager(options.env_manager)
    check_timeout(options.timeout)
    check_timeout(options.trial_timeout, "--trial-timeout")
    check_metrics_interval(options.system_metrics_interval)
    if options.metric is not None:
        if not options.metric.strip():
            raise UsageError("--metric is empty", hint="name the metric to optimise, e.g. --metric val_loss")
        from mlkit.tracking.validation import validate_key  # import budget: with --metric only

        validate_key(options.metric, "metric")  # InvalidInputError (exit 2), as the store says it


def _check_method(options: SweepOptions, space: list[sp.Dimension]) -> str:
    """The search method (given or the default for `space`) and the flags it needs."""
    method = options.method or sp.default_method(space)
    if method not in ("grid", "random", "tpe"):
        raise UsageError(f"--method {method}: unknown method", hint="use grid, random or tpe")
    if options.prune and not options.metric:
        raise UsageError("--prune needs --metric", hint="e.g. --metric val_loss --minimize")
    if method == "tpe" and not options.metric:
        raise UsageError(
            "an Optuna (tpe) sweep needs --metric to optimise", hint="e.g. --metric val_loss --minimize"
        )
    if method != "grid" and options.trials is None:
        raise UsageError(f"a {method} sweep needs --trials N", hint="e.g. --trials 40")
    if method == "grid" and options.trials is not None:
        raise UsageError("--trials is for random and tpe sweeps", hint="a grid runs every combination once")
    if method != "grid" and all(d.kind == "fixed" for d in space):
        raise UsageError("no parameter varies", hint="give a list, range() or a distribution to sweep")
    return method


def prepare(options: SweepOptions) -> Prepared:
    """Check every flag, the space and each trial's values against the project; create nothing."""
    _check_flags(options)
    # import budget: the runner's experiment rules are reused
    from mlkit.runner.options import check_experiment_id, requested_experiment

    check_experiment_id(
        settings.tracking_root(options.store),
        requested_experiment(options.experiment_id, options.experiment_name)[0],
    )
    space = sp.parse_space(options.params)
    method = _check_method(options, space)
    # import budget: the project loads when a sweep is checked
    from mlkit.project import check_undeclared, load_project

    project = load_project(options.project_dir, options.entry_point)
    entry = project.entry_point(options.entry_point)
    sp.check_types(space, {name: p.type for name, p in entry.parameters.items()})
    fixed = sp.fixed_params(space)
    static: list[dict[str, str]] | None = None
    if method == "grid":
        static = sp.grid(space)
    elif method == "random":
        # import budget: Optuna loads for a random or tpe sweep only
        from mlkit.sweep.study import random_trials

        static = random_trials(space, options.trials or 0, options.seed)
    samples = static or [{d.name: sp.format_value(d, d.low) for d in space if not d.is_grid}]
    for trial in samples[:1000]:  # every trial's values, as `mlkit run` will check them
        full = {**fixed, **trial}
        for d in space:
            full.setdefault(d.name, d.values[0] if d.values else sp.format_value(d, d.low))
        entry.resolve(full)
    check_undeclared(entry, {d.name: "" for d in space}, strict=False)
    parallel, gpus = _resources(options)
    spec = {
        "version": 1,
        "project_dir": str(Path(options.project_dir).resolve()),
        "entry_point": options.entry_point,
        "params": dict(options.params),
        "method": method,
        "trials": len(static) if static is not None else options.trials,
        "metric": options.metric,
        "direction": options.direction,
        "parallel": parallel,
        "gpus_per_trial": gpus,
        "prune": options.prune,
        "prune_warmup": options.prune_warmup,
        "prune_startup": options.prune_startup,
        "seed": options.seed,
        "trial_timeout": options.trial_timeout,
        "env_manager": options.env_manager,
        "system_metrics_interval": options.system_metrics_interval,
        "backend": options.backend,
        "backend_config": _backend_config(options),
        "fixed": fixed,
        "static": static,
    }
    return Prepared(spec, space, options)


def _backend_config(options: SweepOptions) -> dict[str, Any] | None:
    """--backend-config as a mapping (kept in the spec, so `resume` submits with the same options)."""
    if options.backend_config is None:
        return None
    if options.backend != "slurm":
        raise UsageError("--backend-config is for --backend slurm", hint="add --backend slurm, or drop it")
    # import budget: the Slurm backend loads only for --backend slurm
    from mlkit.backends.slurm.config import parse_backend_config

    return dict(parse_backend_config(options.backend_config))


def _resources(options: SweepOptions) -> tuple[int, int]:
    """(--parallel, --gpus-per-trial) with `auto` filled in from the GPUs NVML sees."""
    gpus = options.gpus_per_trial
    parallel = options.parallel
    if gpus is None or (parallel is None and gpus > 0):
        count = _gpu_count() if options.backend == "local" else 0
        if gpus is None:
            gpus = 1 if count else 0
        if parallel is None:
            parallel = max(1, count // gpus) if gpus and count else 1
    return parallel or 1, gpus


# ---------------------------------------------------------------------------------------- create
def _experiment(store: Any, options: SweepOptions) -> str:
    # import budget: the runner's env rule (MLKIT_/MLFLOW_EXPERIMENT_NAME / _ID) is reused
    from mlkit.runner.options import requested_experiment

    exp_id, name = requested_experiment(options.experiment_id, options.experiment_name)
    if exp_id is not None:
        store.get_experiment(exp_id)  # NotFoundError (66) when missing
        return str(exp_id)
    if name is not None:
        return str(store.get_or_create_experiment(name))
    return "0"


def create_sweep(prepared: Prepared, store: Any, argv: list[str] | None = None) -> str:
    """The parent run (RUNNING, owned by this driver), its spec artifact and its Optuna study."""
    # import budget: the provenance helpers are the runner's
    from mlkit.runner.provenance import current_user, ownership_tags

    spec = prepared.spec
    exp_id = _experiment(store, prepared.options)
    space = {name: raw for name, raw in spec["params"].items()}
    tags = {
        TAG_METHOD: spec["method"],
        TAG_SPACE: json.dumps(space),
        TAG_DIRECTION: spec["direction"],
        TAG_TRIALS: str(spec["trials"]),
        "mlflow.source.name": spec["project_dir"],
        "mlflow.source.type": "PROJECT",
        "mlflow.project.entryPoint": spec["entry_point"],
        "mlkit.heartbeat": str(int(time.time() * 1000)),
        **ownership_tags(),
    }
    if spec["metric"]:
        tags[TAG_METRIC] = spec["metric"]
    if argv:
        tags["mlkit.argv"] = json.dumps(argv)
    run = store.create_run(exp_id, run_name=prepared.options.run_name, tags=tags, user_id=current_user())
    sweep_id = run.info.run_id
    store.write_artifact(sweep_id, SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    if spec["backend"] == "local":
        _study(store, sweep_id, spec)  # create the journal now: a failure here is before any trial
    return str(sweep_id)


def _study(store: Any, sweep_id: str, spec: dict[str, Any]) -> Any:
    # import budget: Optuna loads only when a sweep is driven
    from mlkit.sweep.study import open_study

    return open_study(Path(store.artifact_dir(sweep_id)) / STUDY_FILE, sweep_id, spec)


# ---------------------------------------------------------------------------------------- survey
def _driver_alive(run: Any) -> bool:
    """Is the driver that created trial `run` (tag mlkit.sweep.driver, "pid:start") alive? The
    lost-run rule: on this host its process; on another, for a trial not yet started, its creation
    time as the heartbeat (a driver starts what it claims at once)."""
    # import budget: the lost-run rule is the store's, loaded with it
    from mlkit.tracking.lost import is_owner_gone

    tags = run.data.tags
    pid, _, start = tags.get(TAG_DRIVER, "").partition(":")
    if not pid.isdigit():
        return False
    host = tags.get("mlkit.host") or procid.hostname()
    if host != procid.hostname() and run.info.status != "SCHEDULED":
        return False  # a started trial's host is its supervisor's (a Slurm node), not its driver's
    owner = {"mlkit.host": host, "mlkit.pid": pid}
    if start:
        owner["mlkit.pid_start"] = start
    if str(run.info.start_time or "").isdigit():
        owner["mlkit.heartbeat"] = str(run.info.start_time)
    return not is_owner_gone(owner)


@dataclass
class Slot:
    """One trial of the sweep and the runs it has had."""

    index: int
    params: dict[str, str] | None = None
    key: str | None = None
    runs: list[Any] = field(default_factory=list)

    def state(self) -> str:
        """done | live | scheduled (never started, its driver gone) | failed | open."""
        if any(r.info.status == "FINISHED" or is_pruned(r) for r in self.runs):
            return "done"
        if any(r.info.status == "RUNNING" for r in self.runs):
            return "live"
        for r in self.runs:
            if r.info.status == "SCHEDULED":
                submitted = SLURM_JOB_TAG in r.data.tags  # waiting in Slurm's queue
                alive = submitted or _driver_alive(r) or supervisor_of(r.info.run_id)
                return "live" if alive else "scheduled"
        return "failed" if self.runs else "open"


def survey(store: Any, sweep_id: str, spec: dict[str, Any], *, mark_lost: bool = False) -> list[Slot]:
    """The sweep's slots with their runs (`mark_lost`: lost RUNNING trials are marked FAILED first;
    that scans the whole store, so the driver does it when it starts and ends, not per claim)."""
    if mark_lost:
        with contextlib.suppress(MlkitError):
            store.mark_lost_runs()
    n = int(spec["trials"])
    slots = [Slot(i) for i in range(n)]
    if spec.get("static") is not None:
        for slot, params in zip(slots, spec["static"], strict=True):
            slot.params = params
            slot.key = sp.trial_key(spec["entry_point"], params)
    for run in trial_runs(store, sweep_id):
        raw = run.data.tags.get(TAG_SLOT, "")
        if raw.isdigit() and int(raw) < n:
            slot = slots[int(raw)]
            slot.runs.append(run)
            if slot.params is None:
                slot.params = {k: run.data.params[k] for k in _swept(spec) if k in run.data.params}
                slot.key = run.data.tags.get(TAG_KEY)
    return slots


def _swept(spec: dict[str, Any]) -> list[str]:
    return [k for k in spec["params"] if k not in spec.get("fixed", {})]


# ---------------------------------------------------------------------------------------- driver
@dataclass
class _Active:
    handle: TrialHandle
    slot: int
    number: int | None
    trial: Any = None
    last_step: int = -1
    seen: int = 0
    pruned: bool = False


class Driver:
    """Keeps `parallel` trials of one sweep running until every slot is done, then ends the parent."""

    def __init__(
        self,
        store: Any,
        sweep_id: str,
        notify: Notify,
        launcher: Launcher | None = None,
        parallel: int | None = None,
        *,
        joined: bool = False,
    ) -> None:
        self.store, self.sweep_id, self.notify = store, sweep_id, notify
        self.joined = joined  # `resume --join`: the parent is the other driver's to end
        self.spec = load_spec(store, sweep_id)
        self.space = sp.parse_space(self.spec["params"])
        self.launcher: Launcher = launcher or LocalLauncher(parallel or int(self.spec["parallel"]))
        bind = getattr(self.launcher, "bind", None)
        if bind is not None:  # a batch launcher writes its scripts into the sweep's artifacts
            bind(store, sweep_id)
        self.study: Any = None
        self.active: dict[str, _Active] = {}
        self.attempted: set[int] = set()
        self.stop_signal: int | None = None
        self.launched = 0
        self.me = procid.current()
        self.driver_tag = f"{self.me.pid}:{self.me.start or ''}"
        self._beat = 0.0
        self._parent_seen = 0.0  # when the parent's status was last read (monotonic)
        self._lost_scan = 0.0  # when lost runs were last marked while waiting on other drivers
        self._warned_no_metric = False
        self._idle_until = 0.0  # no claim before this (monotonic) time: the last one found nothing

    # -- the loop
    def drive(self, timeout: float | None = None) -> SweepOutcome:
        """Run the sweep to its end (or Ctrl-C / SIGTERM / `timeout` seconds); end the parent run."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.study = _study(self.store, self.sweep_id, self.spec)
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        for s in saved:
            signal.signal(s, self._on_signal)
        try:
            self._adopt_live()
            reason = self._loop(deadline)
        except Exception:  # the store failed under us: the trials stop, the parent says so
            if self.active:
                self._stop_all()
            with contextlib.suppress(Exception):
                self._finish("error")
            raise
        finally:
            if self.active:  # a stop: no trial outlives its driver's decision
                self._stop_all()
            for s, handler in saved.items():
                signal.signal(s, handler)
        return self._finish(reason)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum

    def _loop(self, deadline: float | None) -> str | None:
        while True:
            self._reap()
            if self.stop_signal is not None:
                return "signal"
            if deadline is not None and time.monotonic() >= deadline:
                return "timeout"
            if self._parent_ended():
                return "parent_ended"
            room = self.launcher.capacity(len(self.active))
            started = 0
            if room and time.monotonic() >= self._idle_until:
                started = self._claim_and_start(room, deadline)
                # nothing left to claim: look again when a trial ends (or in 2 s, for other drivers)
                self._idle_until = 0.0 if started else time.monotonic() + 2.0
            if not self.active and not started:
                if not self._others_live():
                    return None
                time.sleep(0.5)  # another driver's trials still run: the sweep ends with them
                continue
            self._check_pruning()
            self._heartbeat()
            self._pause()

    def _pause(self) -> None:
        """Until the next look: POLL_S, or less when the launcher says a trial has ended."""
        ended = getattr(self.launcher, "ended", None)
        if ended is None:
            time.sleep(POLL_S)
            return
        ended.wait(POLL_S)
        ended.clear()  # the loop reaps next: a trial that ends after this sets it again

    def _others_live(self) -> bool:
        """Are trials of this sweep running or queued that another driver (`resume --join`) owns?
        (Lost runs, a whole-store scan, are marked once a heartbeat period, not on every look.)"""
        now = time.monotonic()
        scan = now - self._lost_scan >= HEARTBEAT_S
        if scan:
            self._lost_scan = now
        return any(
            slot.state() == "live" for slot in survey(self.store, self.sweep_id, self.spec, mark_lost=scan)
        )

    def _parent_ended(self) -> bool:
        """Has another process stopped the sweep (`sweep cancel`, the Ctrl-C or --timeout of the
        driver this one joined)? Then this driver stops its trials as on a signal. Read once a
        second: one small file."""
        now = time.monotonic()
        if now - self._parent_seen < PARENT_CHECK_S:
            return False
        self._parent_seen = now
        try:
            status = self.store.get_run(self.sweep_id).info.status
        except MlkitError:
            return False
        return status == "KILLED"  # (FAILED/lost is a dead driver's: this one drives on, as resume)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._beat >= HEARTBEAT_S:
            self._beat = now
            with contextlib.suppress(MlkitError):
                self.store.set_tag(self.sweep_id, "mlkit.heartbeat", str(int(time.time() * 1000)))

    # -- claiming
    def _claim_and_start(self, room: int, deadline: float | None) -> int:
        """Claim up to `room` slots (under the sweep's lock), create their runs, start them."""
        lock = Path(self.store.artifact_dir(self.sweep_id)) / CLAIM_LOCK
        lock.parent.mkdir(parents=True, exist_ok=True)
        launches: list[tuple[TrialLaunch, _Active]] = []
        with fsio.locked(lock, wait=60, what=f"sweep {self.sweep_id}'s trial list",
                         hint="another mlkit sweep driver holds it; retry"):  # fmt: skip
            slots = survey(self.store, self.sweep_id, self.spec)
            order = [s for s in slots if s.state() == "scheduled"]
            order += [s for s in slots if s.state() == "failed" and s.index not in self.attempted]
            order += [s for s in slots if s.state() == "open"]
            for slot in order[:room]:
                launches.append(self._claim(slot, deadline))
        if not launches:
            return 0
        try:
            handles = self.launcher.start([launch for launch, _ in launches])
        except TrialStartError as exc:  # those that started are watched (and stopped by drive())
            self._track(exc.started, launches)
            raise
        self._track(handles, launches)
        return len(launches)

    def _track(self, handles: list[TrialHandle], launches: list[tuple[TrialLaunch, _Active]]) -> None:
        for handle, (_, active) in zip(handles, launches, strict=False):
            active.handle = handle
            self.active[handle.run_id] = active
        self.launched += len(handles)

    def _claim(self, slot: Slot, deadline: float | None) -> tuple[TrialLaunch, _Active]:
        # import budget: Optuna is loaded already (the study is open)
        from mlkit.sweep.study import ask, trial_of

        self.attempted.add(slot.index)
        scheduled = next((r for r in slot.runs if r.info.status == "SCHEDULED"), None)
        driver_tag = self.driver_tag
        if scheduled is not None:  # created by a driver that died before starting it: start it now
            run_id = scheduled.info.run_id
            self.store.set_tag(run_id, TAG_DRIVER, driver_tag)
            number = int(scheduled.data.tags.get(TAG_OPTUNA, "-1"))
            trial = trial_of(self.study, number) if number >= 0 else None
            # its values are Optuna's record of the trial (a never-started run has no params logged)
            by_name = {d.name: d for d in self.space}
            asked = {k: sp.format_value(by_name[k], v) for k, v in (trial.params if trial else {}).items()}
            params = {**(slot.params or {}), **asked}
        else:
            trial, params = ask(self.study, self.space, slot.params)
            number = trial.number
            static = self.spec.get("static") is not None
            key = (
                slot.key
                if static and slot.key
                else sp.trial_key(self.spec["entry_point"], params, slot.index)
            )
            name = f"{self._parent_name()}-{slot.index}"
            tags = {
                PARENT_TAG: self.sweep_id,
                TAG_KEY: key,
                TAG_SLOT: str(slot.index),
                TAG_OPTUNA: str(number),
                TAG_DRIVER: driver_tag,
                "mlkit.host": procid.hostname(),
                "mlflow.project.entryPoint": self.spec["entry_point"],
            }
            exp_id = self.store.get_run(self.sweep_id).info.experiment_id
            run_id = self.store.create_run(exp_id, run_name=name, tags=tags, status="SCHEDULED").info.run_id
        left = None if deadline is None else max(1.0, deadline - time.monotonic())
        launch = TrialLaunch(
            run_id=run_id,
            project_dir=self.spec["project_dir"],
            entry_point=self.spec["entry_point"],
            params={**self.spec.get("fixed", {}), **params},
            store=str(self.store.root),
            gpus=int(self.spec["gpus_per_trial"]),
            wait=left if left is not None else DEFAULT_TRIAL_WAIT,
            env_manager=self.spec.get("env_manager") or "auto",
            timeout=self.spec.get("trial_timeout"),
            system_metrics_interval=self.spec.get("system_metrics_interval"),
            log=str(Path(self.store.artifact_dir(self.sweep_id)) / "trials" / f"{slot.index}.log"),
        )
        return launch, _Active(handle=None, slot=slot.index, number=number, trial=trial)  # type: ignore[arg-type]

    def _driven_by_another(self, run: Any) -> bool:
        return run.data.tags.get(TAG_DRIVER) not in (None, self.driver_tag) and _driver_alive(run)

    def _parent_name(self) -> str:
        return str(self.store.get_run(self.sweep_id).info.run_name or self.sweep_id[:8])

    def _adopt_live(self) -> None:
        """Trials a dead driver left running: watched (and counted against --parallel), not rerun."""
        # import budget: Optuna is loaded already (the study is open)
        from mlkit.sweep.study import trial_of

        adopt = getattr(self.launcher, "adopt", None)
        for slot in survey(self.store, self.sweep_id, self.spec, mark_lost=True):
            for run in slot.runs:
                if run.info.status not in ("RUNNING", "SCHEDULED") or run.info.run_id in self.active:
                    continue
                if self._driven_by_another(run):  # a joined sweep: that driver watches it
                    continue
                handle = adopt(run) if adopt is not None else None
                number = int(run.data.tags.get(TAG_OPTUNA, "-1"))
                if handle is not None:  # a batch launcher's trial (a Slurm array task)
                    trial = None
                    with contextlib.suppress(Exception):
                        trial = trial_of(self.study, number) if number >= 0 else None
                    self.active[run.info.run_id] = _Active(handle, slot.index, number, trial)
                    self.attempted.add(slot.index)
                    continue
                if run.info.status != "RUNNING":
                    continue
                tags = run.data.tags
                if not tags.get("mlkit.pid", "").isdigit() or tags.get("mlkit.host") != procid.hostname():
                    continue
                start = tags.get("mlkit.pid_start")
                ref = procid.ProcessRef(int(tags["mlkit.pid"]), float(start) if start else None)
                trial = None
                with contextlib.suppress(Exception):
                    trial = trial_of(self.study, number) if number >= 0 else None
                self.active[run.info.run_id] = _Active(
                    AdoptedTrial(run.info.run_id, ref), slot.index, number, trial
                )
                self.attempted.add(slot.index)
                self.notify(
                    f"mlkit: sweep: trial {slot.index} ({run.info.run_id}) is still running; watching it"
                )

    # -- reaping and pruning
    def _reap(self) -> None:
        for run_id, active in list(self.active.items()):
            if active.handle.poll() is None:
                continue
            del self.active[run_id]
            self._settle(run_id, active)
            self._idle_until = 0.0

    def _settle(self, run_id: str, active: _Active) -> None:
        """A trial's supervisor is gone: fix a pruned trial's reason, tell Optuna how it ended."""
        # import budget: Optuna is loaded already (the study is open)
        from mlkit.sweep.study import tell

        run = self._wait_terminal(run_id)
        status = run.info.status
        if status == "KILLED" and (active.pruned or TAG_PRUNED in run.data.tags):
            self.store.set_tag(run_id, FAILURE_TAG, "pruned")
            state, value = "PRUNED", None
        elif status == "FINISHED":
            value = self._final_metric(run_id)
            state = "COMPLETE" if value is not None or not self.spec.get("metric") else "FAIL"
            if value is None and self.spec.get("metric") and not self._warned_no_metric:
                self._warned_no_metric = True
                self.notify(
                    f"mlkit: sweep: warning: trial {active.slot} finished without a finite {self.spec['metric']!r}"
                )
            value = 0.0 if value is None else value
        else:
            state, value = "FAIL", None
        reason = run.data.tags.get(FAILURE_TAG)
        shown = (
            "pruned"
            if state == "PRUNED"
            else status + (f" ({reason})" if reason and status != "FINISHED" else "")
        )
        metric = (
            f", {self.spec['metric']}={value:.6g}" if state == "COMPLETE" and self.spec.get("metric") else ""
        )
        self.notify(f"mlkit: sweep: trial {active.slot} {shown}{metric} [{run_id}]")
        if active.number is not None and active.number >= 0:
            tell(self.study, active.number, state, value)

    def _wait_terminal(self, run_id: str) -> Any:
        """The run once its supervisor has written the end (a moment after the process exits)."""
        for _ in range(50):
            run = self.store.get_run(run_id)
            if run.info.status not in ("RUNNING", "SCHEDULED"):
                return run
            time.sleep(0.05)
        if run.info.status == "SCHEDULED":  # the supervisor failed before attaching to the run
            self.store.set_tags(run_id, {FAILURE_TAG: "launch_failed"})
            self.store.set_terminated(run_id, "FAILED")
        elif run.info.status == "RUNNING":  # the supervisor died (SIGKILL): FAILED/lost, as always
            with contextlib.suppress(MlkitError):
                self.store.mark_lost_runs()
        return self.store.get_run(run_id)

    def _final_metric(self, run_id: str) -> float | None:
        # import budget: the results module is stdlib-only
        from mlkit.sweep.results import final_metric

        return final_metric(self.store, run_id, self.spec.get("metric"))

    def _check_pruning(self) -> None:
        if not self.spec.get("prune") or not self.spec.get("metric"):
            return
        # import budget: Optuna is loaded already (the study is open)
        from mlkit.sweep.study import report

        for run_id, active in self.active.items():
            if active.pruned or active.trial is None:
                continue
            try:
                history = self.store.get_metric_history(run_id, self.spec["metric"])
            except MlkitError:
                continue
            for metric in history[active.seen :]:
                active.seen += 1
                step = metric.step if metric.step > active.last_step else active.last_step + 1
                active.last_step = step
                if report(active.trial, step, float(metric.value)):
                    self._prune(run_id, active, step)
                    break

    def _prune(self, run_id: str, active: _Active, step: int) -> None:
        active.pruned = True
        with contextlib.suppress(MlkitError):
            self.store.set_tag(run_id, TAG_PRUNED, str(step))
        self.notify(f"mlkit: sweep: pruning trial {active.slot} at step {step} [{run_id}]")
        active.handle.stop()

    # -- stopping and ending
    def _stop_all(self) -> None:
        """SIGTERM every running trial (each supervisor forwards it, waits, SIGKILLs), then reap."""
        # import budget: the runner's grace period is the one --timeout uses
        from mlkit.runner.options import kill_grace

        for active in self.active.values():
            active.handle.stop()
        deadline = time.monotonic() + 2 * kill_grace() + 10
        while self.active and time.monotonic() < deadline:
            for run_id, active in list(self.active.items()):
                if active.handle.poll() is not None:
                    del self.active[run_id]
                    with contextlib.suppress(Exception):
                        self._settle(run_id, active)
            time.sleep(POLL_S)
        for run_id, active in list(self.active.items()):
            active.handle.kill()
            del self.active[run_id]
            with contextlib.suppress(Exception):
                self._settle(run_id, active)

    def _finish(self, reason: str | None) -> SweepOutcome:
        slots = survey(self.store, self.sweep_id, self.spec, mark_lost=True)
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.state()] = counts.get(slot.state(), 0) + 1
        if reason == "parent_ended" or (self.joined and reason in ("signal", "timeout", "error")):
            return self._leave(reason, counts)
        if reason == "signal":
            sig = self.stop_signal or signal.SIGINT
            status, code, tag = "KILLED", 128 + int(sig), "signal"
        elif reason == "timeout":
            status, code, tag = "KILLED", int(ExitCode.TIMEOUT), "timeout"
        elif reason == "error":
            status, code, tag = "FAILED", 1, "driver_error"
        elif counts.get("done", 0) == len(slots):
            status, code, tag = "FINISHED", 0, None
        else:
            status, code, tag = "FAILED", 1, "trials_failed"
        tags = {FAILURE_TAG: tag} if tag else {}
        with contextlib.suppress(MlkitError):
            if tags:
                self.store.set_tags(self.sweep_id, tags)
            elif FAILURE_TAG in self.store.get_run(self.sweep_id).data.tags:
                self.store.delete_tag(self.sweep_id, FAILURE_TAG)
            self._log_best()
            self.store.set_terminated(self.sweep_id, status)
        return SweepOutcome(self.sweep_id, status, code, tag, counts, self.launched)

    def _leave(self, reason: str | None, counts: dict[str, int]) -> SweepOutcome:
        """This driver stops; the parent is not its to end (it was ended, or the driver it joined
        still runs): the outcome reports the parent as it stands."""
        status = self.store.get_run(self.sweep_id).info.status
        if reason == "signal":
            code = 128 + int(self.stop_signal or signal.SIGINT)
        elif reason == "timeout":
            code = int(ExitCode.TIMEOUT)
        else:
            code = int(ExitCode.FAILURE)
        return SweepOutcome(self.sweep_id, status, code, reason, counts, self.launched)

    def _log_best(self) -> None:
        """The best trial's metric on the parent (`best_<metric>`) and its run id as a tag."""
        # import budget: the results table is built only at the end
        from mlkit.sweep.results import sweep_table

        table = sweep_table(self.store, self.sweep_id)
        best = table.best()
        if best is not None and best.metric is not None and self.spec.get("metric"):
            self.store.log_metric(self.sweep_id, f"best_{self.spec['metric']}", best.metric)
            self.store.set_tag(self.sweep_id, "mlkit.sweep.best_run_id", best.run_id)


def reopen(store: Any, sweep_id: str, *, join: bool = False) -> bool:
    """A sweep being resumed: its parent is RUNNING again, owned by this driver. When its driver
    is alive, `join` drives it alongside (the parent stays the other driver's; True is returned);
    without `join` that is refused."""
    # import budget: the provenance helpers are the runner's
    from mlkit.runner.provenance import ownership_tags

    run = store.get_run(sweep_id)
    if run.info.status == "RUNNING":
        tags = run.data.tags
        if _owner_alive(tags):
            if join:
                return True
            host = tags.get("mlkit.host")
            where = f" on host {host}" if host and host != procid.hostname() else ""
            raise UsageError(f"sweep {sweep_id} is being driven by process {tags.get('mlkit.pid', '?')}{where}",
                             hint="pass --join to run its trials alongside, or wait for it")  # fmt: skip
    store.set_tags(sweep_id, {**ownership_tags(), "mlkit.heartbeat": str(int(time.time() * 1000))})
    store.restart_run(sweep_id)
    return False


def resolve_sweep(store: Any, ref: str, experiment_name: str | None = None) -> str:
    """A sweep's run id from an id, a 6+ character prefix or a run name (in that experiment only,
    when `experiment_name` is given)."""
    # import budget: the id/prefix/name resolver is the one `mlkit runs show` uses
    from mlkit.tracking.resolve import resolve_run

    experiment_id = None
    if experiment_name is not None:
        experiment = store.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise NotFoundError(
                f"--experiment-name {experiment_name!r}: no such experiment in {store.root}",
                hint="see `mlkit experiments list`",
            )
        experiment_id = experiment.experiment_id
    run_id = str(resolve_run(store, ref, experiment_id=experiment_id))
    load_spec(store, run_id)
    return run_id


@dataclass
class Cancelled:
    """What `cancel_sweep` did: the live driver it signalled (or None), the trials it stopped."""

    sweep_id: str
    driver_pid: int | None
    trials: list[str] = field(default_factory=list)


def cancel_sweep(store: Any, sweep_id: str, *, wait: float = 60.0) -> Cancelled:
    """Stop a sweep. A live driver gets SIGTERM (it stops its trials as on Ctrl-C and ends the
    parent KILLED); without one, each unfinished trial is stopped itself (SIGTERM to its supervisor
    on this host, `scancel` for a Slurm task, a never-started one marked KILLED) and the parent
    is marked KILLED, `mlkit.failure_reason=cancelled`."""
    run = store.get_run(sweep_id)
    tags = run.data.tags
    if run.info.status == "RUNNING" and _owner_alive(tags):
        _on_this_host(tags, sweep_id, "cancel")
        pid = int(tags["mlkit.pid"])
        _terminate(pid, f"sweep {sweep_id}'s driver")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and store.get_run(sweep_id).info.status == "RUNNING":
            time.sleep(POLL_S)
        return Cancelled(sweep_id, pid)
    stopped = []
    for trial in trial_runs(store, sweep_id):
        if trial.info.status in ("FINISHED", "FAILED", "KILLED"):
            continue
        _stop_orphan(store, trial)
        stopped.append(trial.info.run_id)
    if store.get_run(sweep_id).info.status not in ("FINISHED", "KILLED"):
        store.set_tags(sweep_id, {FAILURE_TAG: "cancelled"})
        store.set_terminated(sweep_id, "KILLED")
    return Cancelled(sweep_id, None, stopped)


class SweepPermissionError(MlkitError):
    """`mlkit sweep cancel` of a sweep whose driver or trials another user runs, not as root."""

    exit_code = ExitCode.NO_PERMISSION


def _terminate(pid: int, what: str) -> None:
    """SIGTERM `pid` (gone already: nothing to do); another user's process: exit 77."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise SweepPermissionError(
            f"{what} (process {pid}) belongs to another user",
            hint="ask its user to cancel it, or run as root",
        ) from None


def _owner_alive(tags: dict[str, str]) -> bool:
    """Is the run's owner (`mlkit.pid` on `mlkit.host`, else its heartbeat) alive? The one rule
    lost-run marking uses (mlkit.tracking.lost.is_owner_gone)."""
    # import budget: the lost-run rule is the store's, loaded with it
    from mlkit.tracking.lost import is_owner_gone

    if not tags.get("mlkit.pid", "").isdigit() and not tags.get("mlkit.heartbeat", "").isdigit():
        return False
    return not is_owner_gone(tags)


def _on_this_host(tags: dict[str, str], sweep_id: str, doing: str) -> None:
    """A live driver on another host cannot be signalled from here: refuse, naming the host."""
    host = tags.get("mlkit.host")
    if host and host != procid.hostname():
        raise UsageError(
            f"sweep {sweep_id} is being driven by process {tags.get('mlkit.pid', '?')} on host {host}",
            hint=f"run `mlkit sweep {doing}` on {host}, or wait for it",
        )


def _stop_orphan(store: Any, trial: Any) -> None:
    """Stop one trial no driver watches."""
    tags = trial.data.tags
    if SLURM_JOB_TAG in tags:
        # import budget: the Slurm commands load only for a sweep that ran on Slurm
        from mlkit.backends.slurm import commands

        with contextlib.suppress(MlkitError):
            if trial.info.status == "RUNNING":
                commands.scancel([tags[SLURM_JOB_TAG]], signal="TERM", batch=True)
            else:
                commands.scancel([tags[SLURM_JOB_TAG]])
        return
    if trial.info.status == "RUNNING" and _owner_alive(tags):
        if tags.get("mlkit.host") != procid.hostname():
            return  # its supervisor is on another host: it is left to end there
        _terminate(int(tags["mlkit.pid"]), f"trial {trial.info.run_id}'s supervisor")  # it stops it (KILLED)
        return
    ref = supervisor_of(trial.info.run_id)
    if ref is not None:  # started, not yet attached to its run
        _terminate(ref.pid, f"trial {trial.info.run_id}'s supervisor")
        return
    if trial.info.status == "SCHEDULED":
        store.set_tags(trial.info.run_id, {FAILURE_TAG: "cancelled"})
        store.set_terminated(trial.info.run_id, "KILLED")
