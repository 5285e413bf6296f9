"""Atomic, durable checkpoints and metric files; keeping the last K; a damaged newest checkpoint or a stray temporary
file; every run file fsynced into its directory (a power cut right after a write)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_runs import CHECKPOINT_EVERY, KEEP, STEPS, logged_step, train_args
from flax import serialization

from vgf import files
from vgf.training import MetricsLogger, list_checkpoints, load_latest_checkpoint, save_checkpoint


def state(value: float) -> dict:
    return {"params": np.full((3,), value, np.float32), "step": np.int32(value)}


def test_write_killed_before_rename_keeps_old_file_and_is_never_listed(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 10, state(1.0))

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and renaming it

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 20, state(2.0))
    monkeypatch.undo()

    assert [path.name for path in tmp_path.glob(".*.tmp")] != []
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10]
    step, restored, _ = load_latest_checkpoint(tmp_path, state(0.0))
    assert step == 10 and restored["params"].tolist() == [1.0] * 3
    files.remove_temporaries(tmp_path)
    assert list(tmp_path.glob(".*.tmp")) == []


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    for step in range(0, 60, 10):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [40, 50]


def test_truncated_newest_checkpoint_falls_back_to_previous_with_warning(tmp_path):
    save_checkpoint(tmp_path, 10, state(1.0))
    newest = save_checkpoint(tmp_path, 20, state(2.0))
    newest.write_bytes(newest.read_bytes()[:7])
    with pytest.warns(UserWarning, match="step_000000020.msgpack cannot be restored.*falling back"):
        step, restored, _ = load_latest_checkpoint(tmp_path, state(0.0))
    assert step == 10 and restored["params"].tolist() == [1.0] * 3
    assert (tmp_path / "step_000000020.msgpack.corrupt").exists()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10]


def test_no_restorable_checkpoint_is_an_error_naming_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_latest_checkpoint(tmp_path, state(0.0))
    save_checkpoint(tmp_path, 10, state(1.0)).write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"none of the checkpoints in {tmp_path}"):
        load_latest_checkpoint(tmp_path, state(0.0))


def test_metrics_logger_drops_rows_after_the_resume_step_and_a_torn_last_line(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in (10, 20, 30):
        logger.log({"step": step, "train/loss": step / 10, "eval/x": float("nan")})
    assert list(tmp_path.glob(".*.tmp")) == []
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 40, "train/lo')  # a torn line, as a non-atomic writer killed mid-line would leave
    resumed = MetricsLogger(tmp_path)
    assert [row["step"] for row in resumed.rows] == [10, 20, 30]
    resumed.truncate_after(20)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["10,1.0,nan", "20,2.0,nan"]


@pytest.mark.slow
def test_resume_after_kill_between_row_and_checkpoint_with_damaged_checkpoint_and_stray_temporary(
    cli, reference_run, assert_same_as_reference, tmp_path
):
    """The finished reference run, damaged three ways at once, resumes to exactly the same result.

    - its final checkpoint is missing, as when a kill lands after the final row is written but before its checkpoint;
    - the checkpoint before it is truncated (damaged outside vgf): resume falls back to the one before, with a warning;
    - a complete-looking temporary file with a later step in its name holds other parameters: it must never be picked.
    """
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    checkpoints = dict(list_checkpoints(run_dir / "checkpoints"))
    assert sorted(checkpoints) == list(range(STEPS - (KEEP - 1) * CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
    fallback = STEPS - 2 * CHECKPOINT_EVERY
    checkpoints[STEPS].unlink()
    damaged = checkpoints[STEPS - CHECKPOINT_EVERY]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    stray = run_dir / "checkpoints" / f".step_{STEPS + 10:09d}.msgpack.4242.tmp"
    stray.write_bytes(checkpoints[fallback].read_bytes())
    assert logged_step(run_dir) == STEPS

    code, out, err = cli.run(train_args(run_dir))
    assert code == 0, out + err
    assert "cannot be restored" in err and "falling back" in err
    assert f"resuming {run_dir} from step {fallback}" in out
    assert not stray.exists()
    assert damaged.with_name(damaged.name + ".corrupt").exists()
    assert serialization.msgpack_restore(checkpoints[STEPS].read_bytes())
    assert_same_as_reference(run_dir)


def test_every_run_file_is_on_disk_before_its_rename_and_the_rename_before_the_write_returns(tmp_path, monkeypatch):
    """A power cut right after a write keeps it. The data is fsynced before the rename, and the rename (an entry of the
    directory) is only on disk once the directory is fsynced: each writer of a run's files does both before returning,
    and a new directory is fsynced into its parent."""
    from vgf.agents import make_config
    from vgf.data.bandit import make_bandit_dataset
    from vgf.evaluation import plot_learning_curve
    from vgf.sweep.runner import _record_failure
    from vgf.training.offline import write_run_info
    from vgf.training.run import TrainSettings
    from vgf.training.online import ReplayBuffer, replay_path, save_online_checkpoint

    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(source, destination):
        real_replace(source, destination)
        events.append(("rename", Path(destination)))

    def fsync(fd):
        real_fsync(fd)
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))

    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(files.os, "fsync", fsync)
    run_dir = tmp_path.resolve() / "run"
    checkpoints = run_dir / "checkpoints"
    save_checkpoint(checkpoints, 10, state(1.0))
    MetricsLogger(run_dir).log({"step": 10, "train/loss": 0.5, "eval/budget_0/success": 1.0})
    save_online_checkpoint(checkpoints, 20, state(2.0), ReplayBuffer.like({"x": np.zeros((1, 2), np.float32)}, 4), keep=3)
    write_run_info(run_dir, TrainSettings("vgf", "bandit", str(run_dir)), make_config("vgf", "bandit"), make_bandit_dataset(100), "0" * 64)
    _record_failure(run_dir, 1, "RuntimeError: boom", "Traceback ...")
    plot_learning_curve([{"step": 10, "eval/budget_0/success": 1.0}], run_dir / "plots" / "learning_curve.png", title="t")

    written = [checkpoints / "step_000000010.msgpack", run_dir / "metrics.jsonl", run_dir / "metrics.csv",
               replay_path(checkpoints, 20), checkpoints / "step_000000020.msgpack", run_dir / "config.json",
               run_dir / "failure.json", run_dir / "plots" / "learning_curve.png"]
    assert sorted(path for kind, path in events if kind == "rename") == sorted(written)
    for path in written:
        renamed = events.index(("rename", path))
        assert ("fsync", files.temporary_name(path)) in events[:renamed], f"{path}: data not fsynced before the rename"
        assert ("fsync", path.parent) in events[renamed + 1 :], f"{path}: directory not fsynced after the rename"
    for new_directory in (run_dir, checkpoints, run_dir / "plots"):
        assert ("fsync", new_directory.parent) in events, f"{new_directory} not fsynced into its parent"
