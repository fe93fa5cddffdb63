"""run_on_finish: the user's shell command with the run's outcome in its environment; never raises."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlkit.runner.hooks import run_on_finish

RUN = {
    "run_id": "abc123",
    "status": "FINISHED",
    "exit_code": 0,
    "run_dir": "/store/0/abc123",
    "experiment_id": "7",
}


def test_success_and_env_vars(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    command = f'echo "$MLKIT_RUN_ID|$MLKIT_STATUS|$MLKIT_EXIT_CODE|$MLKIT_RUN_DIR|$MLKIT_EXPERIMENT_ID" > {out}; echo done'
    result = run_on_finish(command, **RUN)
    assert result.exit_code == 0 and result.error is None and result.ok
    assert result.output == "done\n" and result.command == command
    assert out.read_text() == "abc123|FINISHED|0|/store/0/abc123|7\n"


def test_failed_run_and_missing_exit_code(tmp_path: Path) -> None:
    result = run_on_finish(
        'printf "%s/%s" "$MLKIT_STATUS" "$MLKIT_EXIT_CODE"', **{**RUN, "status": "KILLED", "exit_code": None}
    )
    assert result.output == "KILLED/" and result.ok


def test_failing_hook_is_returned_not_raised() -> None:
    result = run_on_finish("echo to-stdout; echo to-stderr >&2; exit 3", **RUN)
    assert result.exit_code == 3 and not result.ok
    assert result.error == "--on-finish exited with code 3"
    assert result.output == "to-stdout\nto-stderr\n"  # stdout and stderr, interleaved


def test_unknown_command() -> None:
    result = run_on_finish("definitely-not-a-command-mlkit", **RUN)
    assert result.exit_code == 127 and "exited with code 127" in (result.error or "")
    assert "not found" in result.output


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    t0 = time.monotonic()
    result = run_on_finish(f"echo started; sleep 60 & echo $! > {marker}; wait", **RUN, timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert result.exit_code == 124 and result.error == "--on-finish ran longer than 0.5s and was killed"
    assert result.output == "started\n"
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the hook's background child survived the timeout")


def test_hook_killed_by_signal() -> None:
    result = run_on_finish("kill -9 $$", **RUN)
    assert result.exit_code == 137 and result.error == "--on-finish was killed by signal 9"


def test_output_is_capped() -> None:
    result = run_on_finish("head -c 100000 /dev/zero | tr '\\0' x; echo END", **RUN)
    assert result.ok and len(result.output) <= 16_001 and result.output.endswith("xEND\n")
