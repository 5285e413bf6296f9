"""Atomic checkpoints of agent pytrees (Flax msgpack): write to a temporary name, fsync, rename."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from flax import serialization

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.msgpack$")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


def save_checkpoint(directory: Path, step: int, state: Any, keep: int = 3) -> Path:
    """Write `state` as checkpoint `step` and delete all but the newest `keep` checkpoints."""
    path = Path(directory) / f"step_{step:09d}.msgpack"
    atomic_write_bytes(path, serialization.to_bytes(state))
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, template: Any) -> Any:
    """Restore a pytree shaped like `template` from `path`; a corrupt file gets an error naming it."""
    payload = Path(path).read_bytes()
    try:
        return serialization.from_bytes(template, payload)
    except Exception as error:  # msgpack and structure errors carry no file name
        raise ValueError(f"checkpoint {path} cannot be restored: {error}") from error
