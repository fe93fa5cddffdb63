"""Progress lines that rewrite themselves: drawn on the user's terminal, one line per update in
output.log, and the child told (MLKIT_STDERR_TTY) when mlkit's stderr is a terminal."""

from __future__ import annotations

import sys
from pathlib import Path

from mlkit.runner.tee import as_log_lines

from helpers import run_on_a_terminal

PROGRESS = {
    "MLproject": """
        entry_points:
          main:
            command: "python progress.py"
    """,
    "progress.py": """
        import os, sys
        sys.stderr.write("tty=" + os.environ.get("MLKIT_STDERR_TTY", "no") + "\\n")
        for i in (1, 2, 3):
            sys.stderr.write(f"\\r\\033[Kstep {i}/3")
            sys.stderr.flush()
        sys.stderr.write("\\r\\033[Kdone\\n")
        print("  0%|\\r 50%|\\r100%|")  # a lone carriage return is kept
    """,
}


def fold(chunks: list[bytes]) -> bytes:
    out, at_start = b"", True
    for chunk in chunks:
        logged, at_start = as_log_lines(chunk, at_start)
        out += logged
    return out


def test_redraws_become_lines_without_empty_ones_and_other_bytes_stay():
    chunks = [b"\r\x1b[Kstep 10", b"\r\x1b[Kstep 20", b"\r\x1b[Kepoch 1\n", b"\r\x1b[Kstep 30\r\x1b[Kdone\n"]
    assert fold(chunks) == b"step 10\nstep 20\nepoch 1\nstep 30\ndone\n"
    assert fold([b"a\r\nb\n", b"50%|\r100%|\n", bytes(range(256))]) == b"a\r\nb\n50%|\r100%|\n" + bytes(
        range(256)
    )
    assert as_log_lines(b"", False) == (b"", False)


def log_of(store_root: Path) -> str:
    (log,) = store_root.glob("0/*/artifacts/logs/output.log")
    return log.read_bytes().decode()  # not read_text: it would turn \r into \n


def test_output_log_of_a_run_without_a_terminal(make_project, mlkit_run, store_root):
    result = mlkit_run(str(make_project(PROGRESS)))
    assert result.returncode == 0, result.stderr
    assert "tty=no" in result.stderr and "\x1b[Kstep 2/3" in result.stderr  # the child's bytes, as written
    log = log_of(store_root)
    assert "step 1/3\nstep 2/3\nstep 3/3\ndone\n" in log and "\x1b" not in log
    assert log.endswith("  0%|\r 50%|\r100%|\n")


def test_the_child_hears_that_mlkits_stderr_is_a_terminal(make_project, store_root):
    project = make_project(PROGRESS)
    argv = [sys.executable, "-m", "mlkit", "run", "--env-manager", "local", "--gpus", "none",
            "--system-metrics-interval", "0", str(project)]  # fmt: skip
    code, screen = run_on_a_terminal(argv, stdout_too=False)
    assert code == 0, screen.decode(errors="replace")
    assert b"tty=1" in screen and b"\x1b[Kstep 3/3" in screen  # drawn in place on the terminal
    assert "tty=1\nstep 1/3\n" in log_of(store_root)
