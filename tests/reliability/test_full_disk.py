"""A disk that fills up mid-run: the run stops with a message naming the file and the error, every checkpoint and row
written before stays intact and readable, and once there is space the same command resumes to exactly the result of
the run never interrupted.

The disk is a real one where this machine lets the suite mount a small tmpfs (root, as in CI), filled at a random step;
elsewhere `full_disk.py` makes the writes fail with ENOSPC at a random write instead. The other test aims the fault at
a checkpoint write and then at a metric-row write, always by injection.
"""

from __future__ import annotations

import errno
import random
import re
import subprocess
from pathlib import Path

import pytest
from cli_runs import LOG_EVERY, STEPS, logged_step, metric_rows, train_args, wait_for_step
from flax import serialization

from vgf.training import list_checkpoints

FULL_DISK = [str(Path(__file__).with_name("full_disk.py"))]  # python full_disk.py PATTERN N ARGS...
DISK_FULL_EXIT = 4


def check_stopped_with_everything_before_intact(code: int, out: str, err: str, run_dir: Path, reference_run: Path,
                                                failed_file: str) -> None:
    assert code == DISK_FULL_EXIT, out + err
    assert f"cannot write {run_dir}/{failed_file}: No space left on device" in err, err
    assert "run the same command again: it resumes from the last checkpoint" in err
    assert "Traceback" not in err
    rows = metric_rows(run_dir)  # every line parses
    assert rows == metric_rows(reference_run)[: len(rows)]
    # metrics.csv is written after metrics.jsonl, so it may lack the one row the disk filled up between them.
    assert (run_dir / "metrics.csv").read_text().count("\n") - 1 in (len(rows), len(rows) - 1)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert checkpoints and checkpoints[-1][0] <= logged_step(run_dir)  # every checkpoint has its rows
    for _, path in checkpoints:
        serialization.msgpack_restore(path.read_bytes())
    assert list(run_dir.rglob(".*.tmp")) == []  # a failed write removes its temporary file


@pytest.mark.slow
def test_enospc_at_a_checkpoint_then_at_a_metric_row_then_resume_matches_uninterrupted_run(
    cli, reference_run, assert_same_as_reference, tmp_path
):
    run_dir = tmp_path / "run"
    # Checkpoint writes: step 0, 20, then 40 runs out of space half-way (a short write, then ENOSPC).
    code, out, err = cli.run(train_args(run_dir), program=[*FULL_DISK, r"/checkpoints/\.step_", "3"])
    check_stopped_with_everything_before_intact(code, out, err, run_dir, reference_run, "checkpoints/step_000000040.msgpack")
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [0, 20]

    # Resumed from 20: metrics.jsonl is rewritten with the rows up to 20, then rows 30 and 40; the row of 50 fails.
    code, out, err = cli.run(train_args(run_dir), program=[*FULL_DISK, r"/\.metrics\.jsonl\.", "4"])
    check_stopped_with_everything_before_intact(code, out, err, run_dir, reference_run, "metrics.jsonl")
    assert logged_step(run_dir) == 40 and list_checkpoints(run_dir / "checkpoints")[-1][0] == 40

    code, out, err = cli.run(train_args(run_dir))
    assert code == 0, out + err
    assert f"resuming {run_dir} from step 40" in out
    assert_same_as_reference(run_dir)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk, or None where mounting is not permitted (then faults are injected)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    yield mount_point if mounted else None
    if mounted:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)  # lazy: a run a failed test left going


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_disk_full_at_a_random_step_then_space_freed_resume_matches_uninterrupted_run(
    cli, reference_run, assert_same_as_reference, small_disk, tmp_path
):
    rng = random.Random(271828)
    if small_disk is not None:
        run_dir = small_disk / "run"
        process = cli.start(train_args(run_dir))
        wait_for_step(process, run_dir, rng.randrange(LOG_EVERY, STEPS * 3 // 4, LOG_EVERY))
        filler = fill(small_disk)
    else:  # the same fault, from a random write to the run directory on
        run_dir = tmp_path / "run"
        pattern = f"^{re.escape(str(run_dir.resolve()))}/"
        process = cli.start(train_args(run_dir), program=[*FULL_DISK, pattern, str(rng.randint(8, 24))])
    code, out, err = cli.finish(process)
    failed_file = err.split(f"cannot write {run_dir}/")[-1].split(":")[0]
    check_stopped_with_everything_before_intact(code, out, err, run_dir, reference_run, failed_file)
    print(f"{'a full tmpfs' if small_disk else 'ENOSPC injected'}: {failed_file} failed after the row of step "
          f"{logged_step(run_dir)}")

    if small_disk is not None:
        filler.unlink()
    code, out, err = cli.run(train_args(run_dir))
    assert code == 0, out + err
    assert_same_as_reference(run_dir)
