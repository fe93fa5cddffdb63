"""Safe file mechanisms, one home each: opening state files, locking with a deadline, atomic writes.

Every part of mlkit that shares a file with other processes (the GPU ledger and `--lock` files
in the host state dir, the environment cache's build locks, the store's and the registry's locks,
gc's lock) goes through these helpers, so a hole is fixed once:

- `open_dir` / `open_file` never follow a symbolic link at the last component, never block on a
  FIFO or device, and check the *open descriptor* (type, owner, link count, mode) before anything
  is read or written; modes are set with `fchmod` on the descriptor, never on a path.
- `locked` takes an `flock` with a deadline; when it runs out, the error names the holder (pid,
  user, since) as the kernel reports it in /proc/locks, whatever the holder wrote or did not.
- `atomic_write` writes a temp file (in the same directory, or in a directory the caller names
  on the same filesystem, away from where readers look) and renames it into place; on any failure
  the target is untouched and the temp file is gone.

The threat model these serve is written in docs/gpus.md ("Shared state").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mlkit.errors import LockedError, MlkitError, StoreError, UnsafeStateError
from mlkit.procid import HIDDEN, start_time, uid_of, user_name

_POLL_S = 0.05
_POLL_MAX_S = 0.25
_STATUS_EVERY_S = 30.0

ErrorFactory = Callable[[str, str], MlkitError]


def describe_type(mode: int) -> str:
    """What a file that is not a regular one is, for an error: 'a directory', 'a FIFO', ..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _owner(uid: int) -> str:
    return f"{user_name(uid)} (uid {uid})"


def check_dir(fd: int, path: Path | str) -> os.stat_result:
    """Refuse a directory another user could use to swap files under us.

    Safe: owned by us or by root, and if group/world-writable then with the sticky bit (as /tmp).
    """
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateError(
            f"{path}: is {describe_type(st.st_mode)}, not a directory", hint=f"remove {path}"
        )
    refuse_others(
        st, path, sticky_ok=True, risk="swap the files in it",
        owner_hint=f"use a state dir you or root own: ask an admin to run `install -d -m 1777 -o root -g root "
        f"{path}`, or set MLKIT_STATE_DIR to a directory of your own",
        mode_hint=f"chmod 1777 {path} (shared, like /tmp) or chmod 700 {path} (private)",
    )  # fmt: skip
    return st


def refuse_others(
    st: os.stat_result,
    path: Path | str,
    *,
    sticky_ok: bool,
    risk: str,
    owner_hint: str,
    mode_hint: str = "",
) -> None:
    """The one rule for a directory other users must not control: owned by us or root, and not
    writable by group or others (`sticky_ok`: unless it has the sticky bit, as /tmp, where mlkit
    opens each file without following links and checks it). `risk`: what such a user could do.
    A symbolic link's stat is judged by its owner alone (a link's own mode is always 0777)."""
    if st.st_uid not in (os.geteuid(), 0):
        raise UnsafeStateError(
            f"{path}: owned by {_owner(st.st_uid)}, not by you or root; that user could {risk}",
            hint=owner_hint,
        )
    if stat.S_ISLNK(st.st_mode):
        return
    if st.st_mode & 0o022 and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        sticky = " without the sticky bit" if sticky_ok else ""
        raise UnsafeStateError(
            f"{path}: writable by other users (mode {stat.S_IMODE(st.st_mode):04o}){sticky}; any of them could {risk}",
            hint=mode_hint,
        )


def open_dir(
    path: Path | str,
    *,
    create: bool = False,
    shared: bool = False,
    dir_fd: int | None = None,
    display: Path | str | None = None,
) -> int:
    """Open directory `path` without following a link, check it (`check_dir`), return its fd.

    `create` makes it when missing: mode 1777 when `shared` (every user's mlkit uses it, as /tmp),
    else 0700. `dir_fd` resolves `path` relative to an open directory; `display` names it in errors.
    """
    shown = display or path
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        if dir_fd is None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700, dir_fd=dir_fd)
        fd = os.open(path, flags, dir_fd=dir_fd)
        if shared:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, 0o1777)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "not a directory"
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    kind = "a symbolic link"
            raise UnsafeStateError(
                f"{shown}: is {kind}, not a directory; mlkit does not follow links in shared state",
                hint=f"remove {shown} (mlkit makes the directory itself) or point MLKIT_STATE_DIR elsewhere",
            ) from None
        raise UnsafeStateError(
            f"{shown}: cannot open: {exc.strerror}", hint="check the path's permissions"
        ) from None
    try:
        check_dir(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(
    name: str | Path,
    *,
    dir_fd: int | None = None,
    write: bool = False,
    create: bool = False,
    mode: int = 0o600,
    display: str | Path | None = None,
    other_owners: bool = False,
) -> int:
    """Open a regular file without following a link or blocking on a FIFO; check it on the fd.

    Refused (UnsafeStateError): a link, a FIFO/device/directory, a file with other hard links, or
    (unless `other_owners`, for files every user of a shared dir writes) a file owned by someone
    other than us or root. A file we own gets `mode` through fchmod.
    """
    shown = display or name
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeStateError(
                f"{shown}: is a symbolic link; mlkit does not follow links in shared state",
                hint=f"remove {shown}; mlkit makes the file itself",
            ) from None
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.EWOULDBLOCK):
            raise UnsafeStateError(
                f"{shown}: is not a regular file", hint=f"remove {shown}; mlkit makes the file itself"
            ) from None
        raise UnsafeStateError(
            f"{shown}: cannot open: {exc.strerror}", hint="check the file's owner and permissions"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStateError(
                f"{shown}: is {describe_type(st.st_mode)}, not a regular file",
                hint=f"remove {shown}; mlkit makes the file itself",
            )
        if st.st_nlink != 1:
            raise UnsafeStateError(
                f"{shown}: has {st.st_nlink} hard links; it may be another file in disguise",
                hint=f"remove {shown}; mlkit makes the file itself",
            )
        if st.st_uid not in (os.geteuid(), 0) and not other_owners:
            raise UnsafeStateError(
                f"{shown}: owned by {_owner(st.st_uid)}, not by you or root",
                hint=f"remove {shown}, or ask its owner to",
            )
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode and (write or create):
            os.fchmod(fd, mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_holder(fd: int) -> str | None:
    """Who holds an flock on the file open at `fd`: 'pid N of user U since T', from /proc/locks."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != wanted:
            continue
        try:
            pid = int(fields[4])
        except ValueError:
            continue
        return describe_process(pid)
    return None


def describe_process(pid: int) -> str:
    """'pid N of user U since 2026-12-03 14:50:24' (what can be read of it)."""

    parts = [f"pid {pid}"]
    uid = uid_of(pid)
    if uid is not None:
        parts.append(f"of user {user_name(uid)}")
    started = start_time(pid)
    if started is not None and started != HIDDEN:
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
    return " ".join(parts)


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take an exclusive (or `shared`) flock on `fd` if it can be had right now."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_lock(
    fd: int,
    *,
    wait: float,
    what: str,
    hint: str,
    error: type[MlkitError] = LockedError,
    on_wait: Callable[[str], None] | None = None,
    describe: Callable[[], str | None] | None = None,
    shared: bool = False,
) -> None:
    """Take an exclusive (or `shared`) flock on `fd` within `wait` seconds (may be math.inf), else
    raise `error` naming the holder. `on_wait` gets a status line when the wait starts and every 30 s."""
    if try_lock(fd, shared=shared):
        return
    who = describe or (lambda: lock_holder(fd))
    start = time.monotonic()
    next_status = start
    delay = _POLL_S
    while True:
        now = time.monotonic()
        if now - start >= wait:
            holder = who() or "another process"
            waited = f" after waiting {wait:g}s" if wait > 0 else ""
            raise error(f"{what} is held by {holder}{waited}", hint=hint)
        if on_wait is not None and now >= next_status:
            left = "" if wait == float("inf") else f", up to {wait - (now - start):.0f}s more"
            on_wait(f"waiting for {what}, held by {who() or 'another process'}{left}")
            next_status = now + _STATUS_EVERY_S
        time.sleep(min(delay, max(0.0, wait - (now - start))))
        delay = min(delay * 1.5, _POLL_MAX_S)
        if try_lock(fd, shared=shared):
            return


@contextlib.contextmanager
def locked(
    name: str | Path,
    *,
    wait: float,
    what: str,
    hint: str,
    dir_fd: int | None = None,
    mode: int = 0o600,
    other_owners: bool = False,
    error: type[MlkitError] = LockedError,
    on_wait: Callable[[str], None] | None = None,
    display: str | Path | None = None,
) -> Iterator[int]:
    """Hold an exclusive flock on lock file `name` (created, checked by `open_file`) for the block.

    Gives up after `wait` seconds with `error` naming the holder. Yields the lock file's fd. Closing
    the descriptor releases the lock, also when the holder dies. `display` names the file in errors.
    """
    fd = open_file(
        name, dir_fd=dir_fd, write=True, create=True, mode=mode, other_owners=other_owners, display=display
    )
    try:
        wait_lock(fd, wait=wait, what=what, hint=hint, error=error, on_wait=on_wait)
        yield fd
    finally:
        os.close(fd)


def temp_name(path: Path | str, tmp_dir: Path | str | None = None) -> Path:
    """A temp file name for `path`: hidden, unique per process and call, ending `.tmp`; in `tmp_dir`
    (same filesystem, away from readers) when given, else beside `path`."""
    path = Path(path)
    directory = Path(tmp_dir) if tmp_dir is not None else path.parent
    stem = path.name.encode("utf-8")[:64].decode("utf-8", "ignore")  # bytes: names are limited in bytes
    return directory / f".{stem}.{os.getpid()}.{time.monotonic_ns()}.tmp"


@contextlib.contextmanager
def removed_on_failure(new_dir: Path | str | None, undo: Callable[[], None] | None = None) -> Iterator[None]:
    """Fill a directory this process has just made (a run's, a model version's, its meta.yaml
    last); if that fails (a full disk, a signal), call `undo` and remove the directory before the
    error goes on, so no half-made one is left for readers (MLflow's fail on one) or for `gc`.
    `new_dir` None: nothing was made here, nothing is removed."""
    try:
        yield
    except BaseException:
        if undo is not None:
            undo()
        if new_dir is not None:
            import shutil  # import budget: shutil (bz2, lzma) loads only to clean up

            shutil.rmtree(new_dir, ignore_errors=True)
        raise


def write_error(path: Path | str, exc: OSError, error: type[MlkitError] = StoreError) -> MlkitError:
    """The one-line error for a failed write: a full disk is said plainly."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return error(
            f"{path}: cannot write: the disk is full ({exc.strerror})",
            hint=f"free space on the filesystem that holds {Path(path).parent}, then retry",
        )
    return error(f"{path}: cannot write: {exc.strerror or exc}", hint="check free space and permissions")


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is continued, never ignored)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def atomic_write(
    path: Path | str,
    data: bytes | bytearray | memoryview | str | Callable[[int], None],
    *,
    mode: int | None = None,
    tmp_dir: Path | str | None = None,
    fsync: bool = False,
    error: type[MlkitError] = StoreError,
    dir_fd: int | None = None,
    display: Path | str | None = None,
) -> None:
    """Replace `path` with `data` atomically: readers see the old file or the new one, never a part.

    `data` is the content, or a function that writes it to the temp file's descriptor (a copy
    streamed from another file). The temp file is written in `tmp_dir` (or beside `path`), fully
    (short writes continued),
    given `mode` (default: the old file's mode, else 0666 less the umask) on its descriptor, then
    renamed over `path`. On failure the temp file is removed, `path` is untouched, and `error` is
    raised saying why (a full disk by name).

    With `dir_fd`, `path` is a name in the open directory `dir_fd` (a checked state dir): the temp
    file is made there too (O_EXCL, no link followed) and renamed relative to the descriptor, so a
    directory swapped in after it was checked is never written. `display` names it in errors.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    fill = data if callable(data) else None  # a writer of its own (e.g. a streamed copy) gets the fd
    shown = display or path
    if dir_fd is not None:
        tmp: Path | str = temp_name(Path(path).name).name
    else:
        tmp = temp_name(path, tmp_dir)
    if mode is None:
        with contextlib.suppress(OSError):
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                mode = stat.S_IMODE(st.st_mode)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666 if mode is None else 0o600, dir_fd=dir_fd)  # 0666: the umask decides
        try:
            if fill is not None:
                fill(fd)
            else:
                write_all(fd, data)  # type: ignore[arg-type]  # data is given whenever fill is not
            if mode is not None:
                os.fchmod(fd, mode)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if dir_fd is not None:
            os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise write_error(shown, exc, error) from exc
