"""`mlkit run <dir>`: parse the flags, call `mlkit.runner.run_project`, render what it returns."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkit.cli import output, runflags, toplevel
from mlkit.errors import MlkitError, UsageError
from mlkit.settings import tracking_root

if TYPE_CHECKING:  # annotations only: `mlkit --help` must not load the runner
    import typer

    from mlkit.project.model import Project
    from mlkit.runner.dryrun import DryRun
    from mlkit.runner.session import Skipped
    from mlkit.runner.supervise import RunResult


def parse_params(values: list[str] | None) -> dict[str, str]:
    """`-P k=v` items split at the first `=`; a missing `=` or a repeated name is a usage error."""
    params: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"-P {item!r}: expected NAME=VALUE", hint="e.g. -P lr=0.01 (repeat -P for each parameter)"
            )
        if key in params:
            raise UsageError(f"-P {key}: given twice", hint="pass each parameter once")
        params[key] = value
    return params


def _duration(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    # import budget: units loads only when the flag is given
    from mlkit.units import parse_duration

    return parse_duration(value, flag=flag)


def _memory(value: str | None) -> int | None:
    if value is None:
        return None
    # import budget: units loads only when the flag is given
    from mlkit.units import parse_memory

    return parse_memory(value, flag="--min-free-memory")


def run_document(**fields: Any) -> dict[str, Any]:
    """The `--json` document of `mlkit run`: the same keys every time (a run, a skip, an error
    before any run), so a cron log of one document per line can be read back with one schema."""
    doc: dict[str, Any] = {
        "run_id": None, "experiment_id": None, "status": None, "exit_code": 0, "skipped": False,
        "duration_s": None, "failure_reason": None, "artifact_uri": None, "metrics": {},
        "model_uri": None, "next": [], "error": None, "problems": [], "hint": None,
    }  # fmt: skip
    unknown = set(fields) - set(doc)
    assert not unknown, unknown
    doc.update(fields)
    return doc


def _json_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """With --json, a failure before any run exists still prints one JSON document (run_id null)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlkitError as exc:
            if kwargs.get("json_out"):
                output.print_json(
                    run_document(exit_code=int(exc.exit_code), error=exc.message,
                                 problems=list(getattr(exc, "details", ())), hint=exc.hint)
                )  # fmt: skip
            raise

    return wrapper


@output.handle_errors
@_json_on_error
def run_command(
    project_dir: Path,
    *,
    entry_point: str | None,
    param: list[str] | None,
    strict_params: bool,
    experiment_name: str | None,
    experiment_id: str | None,
    run_name: str | None,
    run_id: str | None,
    env_manager: str,
    conda_exe: str | None,
    store: str | None,
    timeout: str | None,
    json_out: bool,
    dry_run: bool,
    gpus: str,
    min_free_memory: str | None,
    max_gpu_util: float | None,
    exclude_busy: bool,
    wait: str | None,
    system_metrics_interval: float,
    nnodes: int | None,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    nproc_per_node: int | None,
    lock: str | None,
    lock_wait: str | None,
    skip_if_done: bool,
    on_finish: str | None,
    container_engine: str,
    build_image: bool,
    docker_args: list[str] | None,
    backend: str,
    backend_config: str | None,
    nodes: int | None,
    follow: bool,
    extra_args: Sequence[str] = (),
    spellings: Sequence[str] = (),
) -> None:
    """Run a project's entry point as a tracked, supervised run.

    Example: mlkit run projects/cnn -P epochs=5 --gpus 1 --timeout 2h
    """
    # import budget: the runner loads when the command runs, not for mlkit run --help
    from mlkit.runner.options import RunOptions
    from mlkit.runner.session import Skipped, run_project
    from mlkit.runner.signals import Interrupted

    if extra_args:  # (only the typer command passes them: mlkit.cli.runflags declines such a line)
        _refuse_extra_args(list(extra_args), project_dir, list(spellings))
    listing = None
    if dry_run and entry_point is None:  # every entry point with its status, then main's plan
        # import budget: the project survey loads only when entry points are listed
        from mlkit.project import survey_project

        listing = survey_project(project_dir)
        if "main" not in listing.entry_points and "main" not in listing.broken:
            _render_listing(listing, json_out, None)
            return
    options = RunOptions(
        project_dir=project_dir,
        entry_point=entry_point or "main",
        params=parse_params(param),
        experiment_name=experiment_name,
        experiment_id=experiment_id,
        run_name=run_name,
        env_manager=env_manager,
        conda_exe=conda_exe,
        store=store,
        timeout=_duration(timeout, "--timeout"),
        dry_run=dry_run,
        gpus=gpus,
        min_free_memory=_memory(min_free_memory),
        max_gpu_util=max_gpu_util,
        exclude_busy=exclude_busy,
        wait=_duration(wait, "--wait"),
        system_metrics_interval=system_metrics_interval,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        nproc_per_node=nproc_per_node,
        lock=lock,
        lock_wait=_duration(lock_wait, "--lock-wait"),
        skip_if_done=skip_if_done,
        on_finish=on_finish or None,
        argv=("mlkit", *sys.argv[1:]),
        strict_params=strict_params,
        run_id=run_id,
        container_engine=container_engine,
        build_image=build_image,
        docker_args=tuple(docker_args or ()),
        backend=_backend(backend, backend_config, nodes, follow),
        backend_config=backend_config,
        nodes=nodes,
    )
    child_out = sys.stderr.buffer if json_out else sys.stdout.buffer
    try:
        outcome = run_project(options, notify=output.info, stdout=child_out, stderr=sys.stderr.buffer)
    except Interrupted as exc:
        output.info("Interrupted.")
        raise SystemExit(128 + exc.signum) from None

    if dry_run:
        # import budget: the dry-run module loads only for --dry-run, never on a plain run
        from mlkit.runner.dryrun import DryRun

        assert isinstance(outcome, DryRun)  # run_project returns one exactly for --dry-run
        if listing is not None:
            _render_listing(listing, json_out, outcome)
        else:
            _render_dry_run(outcome, json_out)
        return
    if isinstance(outcome, Skipped):
        _render_skipped(outcome, json_out)
        return
    if backend == "slurm":
        # import budget: the Slurm rendering loads only for --backend slurm
        from mlkit.cli.slurm import render_submitted

        code = render_submitted(
            outcome, json_out=json_out, follow=follow, store=store, run_document=run_document
        )
        if code:
            raise SystemExit(code)
        return
    # import budget: supervise ran this run, so it is loaded already; only the name is needed here
    from mlkit.runner.supervise import RunResult

    assert isinstance(outcome, RunResult)
    _render_result(outcome, json_out, store, project_dir)
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)


def _backend(backend: str, config: str | None, nodes: int | None, follow: bool) -> str:
    """--backend, checked with the flags that only mean something on Slurm."""
    if backend not in ("local", "slurm"):
        raise UsageError(
            f"--backend {backend!r}: unknown backend", hint="use --backend local or --backend slurm"
        )
    if backend == "local":
        for given, flag in ((config, "--backend-config"), (nodes, "--nodes"), (follow, "--follow")):
            if given:
                raise UsageError(f"{flag} needs --backend slurm", hint=f"add --backend slurm, or drop {flag}")
    return backend


def _render_skipped(outcome: Skipped, json_out: bool) -> None:
    """`--skip-if-done` found a finished twin: its id (and the JSON document with --json)."""
    if json_out:
        output.print_json(
            run_document(run_id=outcome.run_id, experiment_id=outcome.experiment_id,
                         status="FINISHED", skipped=True, next=[f"mlkit runs show {outcome.run_id}"])
        )  # fmt: skip
    else:
        output.line(outcome.run_id)
        output.info(f"mlkit: skipped: run {outcome.run_id} already FINISHED with the same fingerprint")


def _render_result(result: RunResult, json_out: bool, store: str | None, project_dir: Path) -> None:
    """How a run ended: its error, the status line, the closing summary on a terminal, --json."""
    if result.error is not None:
        if output.state.traceback:
            import traceback  # import budget: only with --traceback

            traceback.print_exception(result.error)
        output.error(result.error.message, result.error.hint, getattr(result.error, "details", ()))
    code = f"exit {result.exit_code}"
    if result.signal and result.failure_reason in ("signal", "timeout"):
        code += f", {result.signal}"
    if result.failure_reason and result.failure_reason not in ("exit_code", "signal"):
        code += f", {result.failure_reason}"
    output.info(f"mlkit: run {result.run_id} {result.status} in {result.duration_s:.1f}s ({code})")
    closing = None
    if json_out or sys.stderr.isatty():  # the store is read again only for someone to read it
        # import budget: the summary (and the column rules) load only when shown
        from mlkit.runner.summary import closing_summary

        closing = closing_summary(tracking_root(store), result, _project_name(project_dir))
        if sys.stderr.isatty():
            _render_closing(closing)
    if json_out and closing is not None:  # (closing is always read for --json)
        summary = result.summary()
        if result.error is not None:
            summary.update(error=result.error.message, hint=result.error.hint,
                           problems=list(getattr(result.error, "details", ())))  # fmt: skip
        summary.update((k, closing[k]) for k in ("metrics", "model_uri", "next"))
        output.print_json(run_document(**summary))


def _project_name(project_dir: Path) -> str:
    return Path(project_dir).resolve().name or "model"


def _render_closing(closing: dict[str, Any]) -> None:
    """The end of a run on a terminal: key metrics, the model's URI, what to run next."""
    rows = [(k, f"{v:.6g}") for k, v in closing["metrics"].items()]
    if closing["model_uri"]:
        rows.append(("model", closing["model_uri"]))
    width = max([len(k) for k, _ in rows] + [len("next")])
    lines = [f"  {k:<{width}}  {v}" for k, v in rows]
    for i, command in enumerate(closing["next"]):
        lines.append(f"  {'next' if i == 0 else '':<{width}}  {command}")
    output.info("\n".join(lines))


def _refuse_extra_args(args: list[str], project_dir: Path, options: list[str]) -> None:
    """Arguments `mlkit run` does not take: an unknown flag that names a parameter of the project
    (`--epochs 3`) is answered with the `-P` form, a misspelt flag (`--dryrun`) with the nearest
    of `options`, anything else as click would."""
    first = args[0]
    if not first.startswith("-"):
        raise UsageError(f"unexpected argument {first!r}", hint="see mlkit run --help")
    name, _, value = first.lstrip("-").partition("=")
    if not value and len(args) > 1 and not args[1].startswith("-"):
        value = args[1]
    declared: set[str] = set()
    try:
        # import budget: the project survey loads only when extra arguments are checked
        from mlkit.project import survey_project

        project = survey_project(project_dir)
        declared = {p for ep in project.entry_points.values() for p in ep.parameters}
    except MlkitError:
        pass
    for key in (name, name.replace("-", "_")):
        if key in declared:
            raise UsageError(
                f"no such option: {first.split('=', 1)[0]}",
                hint=f"parameters are passed with `-P {key}={value or '<value>'}`",
            )
    flag = first.split("=", 1)[0]
    import difflib  # import budget: only for a misspelt flag

    near = difflib.get_close_matches(
        flag, [o for o in options if o.startswith("--")] or options, n=2, cutoff=0.6
    )
    hint = f"did you mean {' or '.join(near)}? (see mlkit run --help)" if near else "see mlkit run --help"
    raise UsageError(f"no such option: {flag}", hint=hint)


def _render_listing(project: Project, json_out: bool, dry: DryRun | None) -> None:
    """`--dry-run` without -e: every entry point with its status, then main's plan (if any)."""
    rows = project.statuses()
    if json_out:
        doc: dict[str, Any] = _dry_run_doc(dry) if dry is not None else {"dry_run": True}
        doc["entry_points"] = [{"name": n, "status": st, "note": note} for n, st, note in rows]
        output.print_json(doc)
        return
    lines = ["entry points:" + ("   (none)" if not rows else "")]
    width = max((len(n) for n, _, _ in rows), default=0)
    for name, status, note in rows:
        lines.append(f"  {name:<{width}}  {status}{'  ' + note if note else ''}")
    sys.stdout.write("\n".join(lines) + "\n")
    if dry is not None:
        sys.stdout.write("\nmain:\n")
        _render_dry_run(dry, False)
    else:
        sys.stdout.write("(dry run: nothing was created; pass -e NAME to see an entry point's plan)\n")


def _dry_run_doc(dry: DryRun) -> dict[str, Any]:
    plan = dry.plan
    return {
        "dry_run": True,
        "project": str(plan.cwd),
        "entry_point": plan.entry_point,
        "parameters": {k: {"type": plan.types.get(k, "string"), "value": v} for k, v in plan.params.items()},
        "argv": plan.argv,
        "interpreter": plan.interpreter,
        "shell": plan.shell,
        "cwd": str(plan.cwd),
        "env_manager": dry.env_manager,
        "store": str(dry.store_root),
        "experiment": dry.experiment,
        "gpus": dry.gpus,
        "torchrun": plan.torchrun,
        "timeout_s": plan.timeout,
        "notices": plan.notices,
        "container": (
            {"engine": plan.container_engine, "image": plan.container_image, "name": plan.container_name}
            if plan.container_engine
            else None
        ),
        "slurm_script": dry.slurm_script,
    }


def _render_dry_run(dry: DryRun, json_out: bool) -> None:
    # import budget: proc loads only when a --dry-run plan is rendered
    from mlkit.proc import describe

    plan = dry.plan
    doc = _dry_run_doc(dry)
    if json_out:
        output.print_json(doc)
        return
    lines = [f"entry point:  {plan.entry_point}", "parameters:"]
    if plan.params:
        width = max(len(k) for k in plan.params)
        for key, value in plan.params.items():
            lines.append(f"  {key:<{width}}  ({plan.types.get(key, 'string')}) = {value!r}")
    else:
        lines[-1] += "   (none)"
    lines += [
        f"command:      {describe(plan.argv)}",
        f"interpreter:  {plan.interpreter or 'the python of the environment the run builds'}",
        f"cwd:          {plan.cwd}",
        f"env manager:  {doc['env_manager']}",
        f"store:        {doc['store']}",
        f"experiment:   {doc['experiment']}",
        f"gpus:         {doc['gpus']}",
    ]
    if plan.timeout:
        lines.append(f"timeout:      {plan.timeout:g}s")
    if plan.container_engine:
        lines.append(f"container:    {plan.container_engine}, image {plan.container_image}")
    lines += [f"note:         {n}" for n in plan.notices]
    if dry.slurm_script:
        lines.append("batch script (what sbatch would be given; inside the job, the command above runs):")
        lines += [f"  {line}" for line in dry.slurm_script.splitlines()]
    lines.append("(dry run: nothing was created" + (", nothing submitted)" if dry.slurm_script else ")"))
    sys.stdout.write("\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    """Add `mlkit run` to the app: a typer command built from mlkit.cli.runflags' table, which
    calls `run_command` with what it read (and the arguments it did not know, for their hint)."""
    # import budget: typer loads only when the app is built, never for a plain `mlkit run` line
    import inspect

    import typer  # (as above: only here, when the typer app is built)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", keyword, annotation=typer.Context),
        inspect.Parameter(
            "project_dir", keyword, annotation=Path,
            default=typer.Argument(..., metavar="PROJECT_DIR", help=runflags.PROJECT_HELP),
        ),
    ]  # fmt: skip
    for flag in runflags.FLAGS:
        option = typer.Option(
            flag.default, *flag.decls, help=flag.help, metavar=flag.metavar,
            rich_help_panel=flag.panel, envvar=flag.envvar,
        )  # fmt: skip
        params.append(inspect.Parameter(flag.name, keyword, default=option, annotation=_annotation(flag)))

    def run(ctx: typer.Context, **values: Any) -> None:
        spellings = [o for p in ctx.command.params for o in p.opts]
        run_command(**values, extra_args=ctx.args, spellings=spellings)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # typer reads it
    run.__annotations__ = {p.name: p.annotation for p in params}
    app.command(
        "run",
        help=toplevel.help_text("run", RUN_DETAILS),
        no_args_is_help=True,
        # unknown flags reach `run`, which says how to pass a parameter (`--epochs 3` -> -P epochs=3)
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )(run)


RUN_DETAILS = "Example: mlkit run projects/cnn -P epochs=5 --gpus 1 --timeout 2h"  # after toplevel's summary


def _annotation(flag: runflags.Flag) -> Any:
    """The type typer gives the flag: `int | None` for an optional int, `list[str] | None` for a
    repeatable one."""
    kind = list[str] if flag.kind is list else flag.kind
    return kind if flag.default is not None else kind | None
