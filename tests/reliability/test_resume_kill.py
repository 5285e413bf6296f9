"""SIGKILL at random points, then resume: the run ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import random
import shutil
import signal
import time

import pytest
from cli_runs import STEPS, logged_step, resume_args, train_args, wait_for_step
from flax import serialization

from vgf.cli import main
from vgf.training import list_checkpoints

KILLS = 3


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_uninterrupted_run(cli, reference_run, assert_same_as_reference, tmp_path):
    run_dir = tmp_path / "run"
    rng = random.Random(1729)
    targets = sorted(rng.sample(range(STEPS * 3 // 4), KILLS))
    killed_at = []
    for target in targets:
        # Run the same command again (an existing run directory resumes by itself), let it log a row at a random step,
        # wait up to a row's worth of time more (so kills also land in evaluation, checkpoint and metric writes), then
        # kill it with no chance to clean up.
        process = cli.start(train_args(run_dir))
        wait_for_step(process, run_dir, target)
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        code, out, err = cli.finish(process)
        assert code == -signal.SIGKILL, f"run ended by itself before the kill:\n{out}{err}"
        killed_at.append(logged_step(run_dir))
        assert 0 <= killed_at[-1] < STEPS
        # What a kill leaves behind is whole: every checkpoint parses, and so does every metric row (logged_step).
        for _, path in list_checkpoints(run_dir / "checkpoints"):
            serialization.msgpack_restore(path.read_bytes())
    print(f"kill targets {targets}, killed after the rows of steps {killed_at}")

    code, out, err = cli.run(resume_args(run_dir))
    assert code == 0, out + err
    assert "resuming" in out
    assert_same_as_reference(run_dir)


def test_resume_of_a_finished_run_changes_nothing(reference_run, assert_same_as_reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    assert main(resume_args(run_dir)) == 0  # in-process: nothing is left to train
    assert f"resuming {run_dir} from step {STEPS}" in " ".join(capsys.readouterr().out.split())
    assert_same_as_reference(run_dir)
