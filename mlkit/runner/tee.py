"""The output tee: the child's stdout and stderr copied, chunk by chunk as they arrive, to the
terminal and to `<run>/artifacts/logs/output.log` (a status line redrawn in place becomes one log
line per update), watching for CUDA out-of-memory messages on the way."""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from typing import IO

OOM_MARKERS = (b"CUDA out of memory", b"OutOfMemoryError")
_OOM_TAIL = max(len(m) for m in OOM_MARKERS)


class Tee(threading.Thread):
    """Copies the child's stdout/stderr pipes to the terminal streams and to one log file."""

    def __init__(self, pipes: dict[int, IO[bytes] | None], log_fd: int):
        super().__init__(name="mlkit-tee", daemon=True)
        self.pipes = pipes  # pipe fd -> where its bytes go on our side (None: log only)
        self.log_fd = log_fd
        self.oom = False
        self._tails: dict[int, bytes] = dict.fromkeys(pipes, b"")
        self._log_at_line_start = True

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for fd in self.pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(self.pipes)
        try:
            while open_fds:
                for key, _ in sel.select():
                    fd = key.fd
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    self._write(fd, chunk)
        finally:
            sel.close()

    def _write(self, fd: int, chunk: bytes) -> None:
        logged, self._log_at_line_start = as_log_lines(chunk, self._log_at_line_start)
        try:  # O_APPEND, unbuffered: `runs logs --follow` sees it now
            os.write(self.log_fd, logged)
        except OSError as exc:  # disk full: keep the child's output flowing to the terminal
            import logging  # only when something is logged

            logging.getLogger("mlkit.runner").warning("cannot write output.log: %s", exc)
        stream = self.pipes[fd]
        if stream is not None:
            try:
                stream.write(chunk)
                stream.flush()
            except (OSError, ValueError):  # terminal gone (`| head`, closed ssh): log file only
                self.pipes[fd] = None
        if not self.oom:
            window = self._tails[fd] + chunk
            if any(marker in window for marker in OOM_MARKERS):
                self.oom = True
            self._tails[fd] = window[-_OOM_TAIL:]


REWRITE = b"\r\x1b[K"  # carriage return + erase line: "redraw this line" (the trainers' status line)


def as_log_lines(chunk: bytes, at_line_start: bool = True) -> tuple[bytes, bool]:
    """What output.log keeps of the child's bytes, and whether the log then ends a line.

    The bytes as written, except that a status line redrawn in place on a terminal (`\\r ESC[K`)
    becomes one line per update, so the log reads like the output of a run without a terminal;
    a redraw at the start of a line adds no empty line. Any other byte, a lone `\\r` included,
    is kept as it is.
    """
    if REWRITE not in chunk:
        return chunk, chunk.endswith(b"\n") if chunk else at_line_start
    out = bytearray()
    for i, piece in enumerate(chunk.split(REWRITE)):
        if i and not at_line_start:  # a redraw in mid-line ends that line
            out += b"\n"
            at_line_start = True
        if piece:
            out += piece
            at_line_start = piece.endswith(b"\n")
    return bytes(out), at_line_start


def close_tee(tee: Tee, *pipes: int) -> None:
    """Let the tee copy what is left in the pipes (up to 5 s), then close their read ends."""
    tee.join(timeout=5)
    for fd in pipes:
        with contextlib.suppress(OSError):
            os.close(fd)
