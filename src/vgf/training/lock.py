"""One launch per run directory: a lock held on `RUN_DIR/run.lock` while a run trains.

The lock is a POSIX record lock (`fcntl.lockf`), held by the kernel for the process, not by the file's existence:
it goes when the process dies however it dies (SIGKILL, the OOM killer, a power cut), so a dead launch never blocks
the next one and there is no stale lock to break. On NFS the file server holds it, and releases the lock of a host
that went down when that host's lease expires (NFSv4: 90 s by default). The file also says who holds it (pid, host,
start time), for the message that refuses a second launch; it is deleted when the run ends.

A file system without locks (NFS mounted `nolock`) gets a warning, and the run goes on unguarded.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator

from vgf.files import make_directories

LOCK_FILE = "run.lock"
_held: set[Path] = set()  # POSIX locks never conflict within one process, so this process's own are kept here


class RunDirectoryInUse(RuntimeError):
    """Another launch holds the run directory."""


@contextlib.contextmanager
def hold_run_directories(run_dirs: list[Path | str]) -> Iterator[None]:
    """Hold the lock of every directory in `run_dirs` (created if missing) for the block; all or none."""
    with contextlib.ExitStack() as stack:
        for run_dir in run_dirs:
            stack.enter_context(hold_run_directory(Path(run_dir)))
        yield


@contextlib.contextmanager
def hold_run_directory(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block, or raise `RunDirectoryInUse` naming the holder."""
    run_dir = run_dir.resolve()
    path = run_dir / LOCK_FILE
    if run_dir in _held:
        raise RunDirectoryInUse(f"{run_dir} is in use by this process (pid {os.getpid()}), which is training it already")
    created = make_directories(run_dir)
    fd = acquire(path)
    _held.add(run_dir)
    try:
        if fd is not None:
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            with contextlib.suppress(OSError):  # only for messages: a full disk must not stop a run here
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        _held.discard(run_dir)
        if fd is not None:
            path.unlink(missing_ok=True)  # still locked: a launch that opened it meanwhile sees it gone (`acquire`)
            os.close(fd)
        for directory in reversed(created):  # a launch refused before writing anything leaves no empty directory
            with contextlib.suppress(OSError):
                directory.rmdir()


def acquire(path: Path) -> int | None:
    """The open, locked lock file; None where the file system has no locks."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EACCES, errno.EAGAIN):
                raise RunDirectoryInUse(refusal(path)) from None
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                warnings.warn(f"cannot lock {path} ({os.strerror(error.errno)}): a second launch on this run "
                              "directory would not be refused", stacklevel=3)
                return None
            raise
        # The holder before us deletes the file as it finishes; a lock on that deleted file guards nothing.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def refusal(path: Path) -> str:
    """Why a launch is refused: the holder as its lock file describes it."""
    try:
        holder = json.loads(path.read_text())
        who = f"pid {holder['pid']} on host {holder['host']}, running since {holder['started']}"
        if holder["host"] != socket.gethostname():
            who += (". If that host is down, the file server releases its lock when the host's lease expires "
                    "(NFSv4: 90 s); then launch again")
    except (OSError, ValueError, KeyError):
        who = "another process, which has not written its details yet"
    return (f"{path.parent} is in use by {who}. Two launches on one run directory would overwrite each other's "
            f"checkpoints: wait for that run to end (or stop it), or choose another run directory")
