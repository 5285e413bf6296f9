"""Atomic, durable file writes: the one way vgf replaces a file (checkpoints, metric rows, replay buffers, run
records, datasets, plots).

A file is written to a hidden temporary name beside it, fsynced, renamed over the old one, and then the directory is
fsynced: the rename is atomic, but the new directory entry only survives a power cut once the directory itself is
on disk. A write that fails (a full disk, a quota, an I/O error) removes its temporary file and raises `WriteFailed`
naming the file; the old file is untouched. A write killed half-way leaves only a `.*.tmp` file, which the next run
deletes (`remove_temporaries`).

No vgf imports: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO, Iterator


class WriteFailed(OSError):
    """A file could not be written; the file it was to replace, and everything written before, are unchanged."""

    def __str__(self) -> str:
        return self.strerror


def fsync_directory(directory: Path) -> None:
    """Put `directory`'s entries (a rename, a new file) on disk; a file system that cannot sync a directory is let be."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def make_directories(directory: Path) -> list[Path]:
    """`mkdir -p` whose new directories survive a power cut (each one's parent is fsynced); returns those it created,
    outermost first."""
    directory = Path(directory)
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_directory(new.parent)
    return missing[::-1]


def write_failed(path: Path, error: OSError) -> WriteFailed:
    reason = os.strerror(error.errno) if error.errno else str(error)
    return WriteFailed(error.errno, f"cannot write {path}: {reason}; the files written before it are unchanged", str(path))


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace `path` in one step when the block ends without an error.

    For writers that stream (NumPy, Matplotlib); `atomic_write_bytes` for a payload already in memory.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        make_directories(path.parent)
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except Exception as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteFailed):  # a nested one already names its file
            raise write_failed(path, error) from error
        raise


def atomic_write_bytes(path: Path | str, payload: bytes) -> None:
    """Replace `path` with `payload` atomically and durably (see the module's docstring)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        make_directories(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:  # os.write may write less than asked (a signal, a nearly full disk)
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, error) from error


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temporary_name(path: Path) -> Path:
    """The hidden name `path` is written under first: per process, so two writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_temporaries(directory: Path) -> None:
    """Delete the temporary files that writes killed half-way left in `directory`."""
    if Path(directory).is_dir():
        for leftover in Path(directory).glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
