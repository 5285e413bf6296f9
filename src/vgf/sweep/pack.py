"""A results directory packed to continue on another machine: each run's record and its newest checkpoint.

A study longer than a machine's life (or a session's) goes on elsewhere: `vgf bench ... --pack DIR` copies into DIR
every run's files (config.json, metrics, plots, `vgf eval` records, a failure record) and its newest checkpoint, the
one it resumes from; the kept older checkpoints stay behind. Copy DIR back as the results directory, run the same command,
and each unfinished run resumes where it was packed. Packing again into the same DIR replaces what was there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vgf.training.checkpoint import atomic_write_bytes, list_checkpoints
from vgf.training.lock import LOCK_FILE

__all__ = ["PackedRun", "pack_results"]


@dataclasses.dataclass(frozen=True)
class PackedRun:
    name: str
    step: int | None  # of the checkpoint packed; None: the run had none yet
    bytes: int  # what the run takes in the pack


def pack_results(results_dir, out_dir) -> list[PackedRun]:
    """Pack each run directory of `results_dir` (one holding config.json) into `out_dir/<run>`; see the module doc."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} not found")
    if out_dir.resolve() == results_dir.resolve():
        raise ValueError(f"--pack {out_dir}: it is the results directory itself; pack into another one")
    packed = []
    for run_dir in sorted(path for path in results_dir.iterdir() if (path / "config.json").is_file()):
        target = out_dir / run_dir.name
        files = [path for path in run_dir.rglob("*") if path.is_file() and path.name != LOCK_FILE
                 and path.relative_to(run_dir).parts[0] != "checkpoints"]
        checkpoints = list_checkpoints(run_dir / "checkpoints")
        newest = [checkpoints[-1][1]] if checkpoints else []
        carried = {source.relative_to(run_dir) for source in files + newest}
        for relative in carried:
            atomic_write_bytes(target / relative, (run_dir / relative).read_bytes())
        for path in target.rglob("*"):  # an earlier pack's older checkpoint, a failure record since cleared
            if path.is_file() and path.relative_to(target) not in carried:
                path.unlink()
        size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
        packed.append(PackedRun(run_dir.name, checkpoints[-1][0] if checkpoints else None, size))
    return packed
