"""`mlkit gpus`: this machine's GPUs, what runs on them and which mlkit runs lease them."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from mlkit.cli import output, toplevel
from mlkit.cli.output import handle_errors

COLUMNS = [
    "index",
    "name",
    "uuid",
    "memory",
    "util",
    "temp",
    "power",
    "sm clock",
    "cc",
    "mig",
    "processes",
    "mlkit lease",
]


def register(app: typer.Typer) -> None:
    # its help: the summary declared in mlkit.cli.toplevel, then the docstring
    app.command("gpus", help=toplevel.help_text("gpus", gpus.__doc__))(gpus)


@handle_errors
def gpus(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (includes `reason`)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.1, help="Seconds between refreshes."),
    release: str | None = typer.Option(
        None,
        "--release",
        metavar="RUN|UUID",
        help="Remove the ledger's leases of run RUN (6+ characters of its id) or on GPU UUID: stale, "
        "foreign or your own. Another user's live run is refused unless you are root (exit 77).",
    ),
) -> None:
    """With no NVIDIA driver it says why and exits 0.

    Example: mlkit gpus --watch -n 5
    """
    # import budget: the GPU probe (NVML) loads when the command runs, not for mlkit --help
    from mlkit.gpu.host import probe

    if release is not None:
        _release(release, as_json)
        return
    if watch:
        _watch(interval, as_json)
        return
    report = probe()
    if as_json:
        output.print_json(report)
        return
    _render(report)


def _rows(report: Any) -> list[list[str]]:
    # import budget: units loads only when rows are rendered, not for mlkit --help
    from mlkit.units import format_bytes

    rows = []
    serving = {lease.uuid for lease in report.leases if lease.role == "serving"}
    for gpu in report.gpus:
        if gpu.lost:
            rows.append([str(gpu.index), "LOST", gpu.uuid, gpu.error or "", *[""] * 8])
            continue
        rows.append(_row(gpu, format_bytes))
        if gpu.uuid in serving:  # held by `mlkit models serve` for its lifetime
            rows[-1][-1] += " (serving)"
        for mig in gpu.mig_instances:
            rows.append(_row(mig, format_bytes, mig=True))
    return rows


def _row(gpu: Any, fmt: Any, mig: bool = False) -> list[str]:
    def num(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"

    used = "-" if gpu.memory_used is None else fmt(gpu.memory_used)
    total = "-" if gpu.memory_total is None else fmt(gpu.memory_total)
    power = f"{num(gpu.power_draw and round(gpu.power_draw), ' W')}/{num(gpu.power_limit and round(gpu.power_limit), ' W')}"
    if gpu.power_draw is None and gpu.power_limit is None:
        power = "-"
    clock = "-" if gpu.sm_clock is None else f"{gpu.sm_clock}/{num(gpu.sm_clock_max)} MHz"
    procs = ", ".join(
        f"{p.pid}" + (f" {p.name}" if p.name else "") + (f" ({fmt(p.used_memory)})" if p.used_memory else "")
        for p in gpu.processes
    )
    mig_text = "instance" if mig else ("on" if gpu.mig_mode else "off" if gpu.mig_mode is False else "-")
    return [
        f"{gpu.index}" + (f" mig {gpu.gpu_instance_id}" if mig else ""),
        gpu.name or "-",
        gpu.uuid,
        f"{used} / {total}",
        num(gpu.utilization_gpu, "%"),
        num(gpu.temperature, "°C"),
        power,
        clock,
        gpu.compute_capability or "-",
        mig_text,
        procs or "-",
        gpu.leased_by or gpu.not_free or "-",
    ]


def _header(report: Any) -> str:
    # import budget: gpu.devices loads only when the header is rendered
    from mlkit.gpu.devices import fake_active

    parts = []
    if report.driver_version:
        parts.append(f"driver {report.driver_version}")
    if report.cuda_version:
        parts.append(f"CUDA {report.cuda_version}")
    parts.append(f"{len(report.gpus)} GPU{'s' if len(report.gpus) != 1 else ''}")
    fake = fake_active()
    if fake:
        parts.append(f"stand-in NVML scenario {fake!r} (MLKIT_FAKE_NVML)")
    return ", ".join(parts)


def _render(report: Any) -> None:
    if not report.gpus:
        output.info(f"No GPUs: {report.reason}")
        return
    output.info(_header(report))
    output.print_table(COLUMNS, _rows(report))
    for line in _waiting(report) + _ignored(report):
        output.info(line)
    if report.reason:
        output.info(report.reason)


def _waiting(report: Any) -> list[str]:
    """One line per run queued for GPUs (`--wait`), oldest first: the order they will be served."""

    lines = []
    for place, waiter in enumerate(report.waiting, 1):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(waiter.since))
        lines.append(
            f"waiting #{place}: run {waiter.run_id[:8]}… (pid {waiter.pid}"
            + (f", {waiter.user}" if waiter.user else "")
            + f") for {waiter.describe()}, since {since}"
        )
    return lines


def _ignored(report: Any) -> list[str]:
    """One line per ledger record mlkit does not honour (another host's, a pid that is not the
    mlkit process that took it), with how to clear it."""
    lines = []
    for item in report.ignored:
        what = f"lease of {item['uuid']}" if item["kind"] == "lease" else "waiter"
        lines.append(
            f"ignored {what} by run {item['run_id']} ({item['state']}): {item['why']}; "
            f"clear it with `{item['clear']}`"
        )
    return lines


def _release(target: str, as_json: bool) -> None:
    # import budget: the core loads when the command runs, not for mlkit --help
    from mlkit.gpu.ledger import release_leases

    removed = release_leases(target)
    if as_json:
        output.print_json({"released": [{"run_id": r.run_id, "uuid": r.uuid} for r in removed]})
        return
    for lease in removed:
        output.info(f"released {lease.uuid} (run {lease.run_id})")
    if not removed:
        output.info(f"released the wait-queue entry of {target}")


def _watch(interval: float, as_json: bool) -> None:
    """A live view on a terminal; plain lines (or one JSON document per line) otherwise."""

    # import budget: the GPU probe (NVML) loads when the command runs, not for mlkit --help
    from mlkit.gpu.host import probe

    live_ok = not as_json and output.interactive()
    try:
        if live_ok:
            _live(interval)
            return
        while True:
            started = time.monotonic()
            report = probe()
            if as_json:
                sys.stdout.write(json.dumps(output.to_jsonable(report)) + "\n")
            else:
                stamp = time.strftime("%H:%M:%S")
                if not report.gpus:
                    sys.stdout.write(f"{stamp} no GPUs: {report.reason}\n")
                for row in _rows(report):
                    sys.stdout.write(f"{stamp}\t" + "\t".join(row) + "\n")
                for line in _waiting(report) + _ignored(report):
                    sys.stdout.write(f"{stamp}\t{line}\n")
            sys.stdout.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return  # Ctrl-C ends the watch: exit 0


def _live(interval: float) -> None:
    # import budget: rich and the GPU probe load only for the live view
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    # import budget: the GPU probe (NVML) loads when the command runs, not for mlkit --help
    from mlkit.gpu.host import probe

    def table() -> Table:
        report = probe()
        title = _header(report) + time.strftime("  (%H:%M:%S, Ctrl-C to quit)")
        tab = Table(title=title if report.gpus else f"No GPUs: {report.reason}", header_style="bold")
        for column in COLUMNS:
            tab.add_column(column, overflow="fold")
        for row in _rows(report):
            tab.add_row(*row)
        notes = _waiting(report) + _ignored(report)
        if notes:
            tab.caption = "\n".join(notes)
        return tab

    with Live(table(), console=Console(highlight=False), auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(table(), refresh=True)
