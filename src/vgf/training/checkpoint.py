"""Checkpoints of agent pytrees (Flax msgpack), written atomically and durably by `vgf.files`.

A write killed half-way leaves only a hidden `.*.tmp` file, which no listing ever picks; a write that fails (a full
disk) leaves the checkpoints before it as they were.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from flax import serialization

# The training modules write through these.
from vgf.files import atomic_write_bytes, atomic_write_text, remove_temporaries  # noqa: F401

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.msgpack$")


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(directory: Path, step: int, state: Any, keep: int = 3, keep_every: int | None = None) -> Path:
    """Write `state` as checkpoint `step` and delete all but the newest `keep` checkpoints, sparing those whose step
    is a multiple of `keep_every` (when given): a frequent checkpoint for resuming, a sparse one for re-evaluating."""
    path = Path(directory) / f"step_{step:09d}.msgpack"
    atomic_write_bytes(path, serialization.to_bytes(state))
    for old_step, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        if keep_every is None or old_step % keep_every:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, template: Any) -> Any:
    """Restore a pytree shaped like `template` from `path`; a corrupt file gets an error naming it."""
    payload = Path(path).read_bytes()
    try:
        return serialization.from_bytes(template, payload)
    except Exception as error:  # msgpack and structure errors carry no file name
        raise ValueError(f"checkpoint {path} cannot be restored: {error}") from error


def load_latest_checkpoint(directory: Path, template: Any) -> tuple[int, Any, Path]:
    """(step, state, path) of the newest checkpoint in `directory` that can be restored.

    One that cannot (damaged outside vgf) is renamed to `*.corrupt`, with a warning, and the one before it is tried.
    """
    checkpoints = list_checkpoints(directory)
    for step, path in reversed(checkpoints):
        try:
            return step, load_checkpoint(path, template), path
        except ValueError as error:
            path.rename(path.with_name(path.name + ".corrupt"))
            warnings.warn(f"{error}; renamed it to {path.name}.corrupt, falling back to the one before", stacklevel=2)
    if checkpoints:
        raise ValueError(f"none of the checkpoints in {directory} can be restored")
    raise FileNotFoundError(f"no checkpoint in {directory}")
