"""Ctrl-C or SIGTERM (`kill`): a checkpoint of the last logged step, exit code 130, the resume command; resuming completes
the same run."""

from __future__ import annotations

import re
import signal

import pytest
from cli_runs import LOG_EVERY, STEPS, logged_step, resume_args, train_args, wait_for_step

from vgf.training import list_checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_prints_resume_command_and_resume_matches_uninterrupted_run(
    signum, cli, reference_run, assert_same_as_reference, tmp_path
):
    run_dir = tmp_path / "run"
    process = cli.start(train_args(run_dir))
    wait_for_step(process, run_dir, STEPS // 2)
    process.send_signal(signum)
    code, out, err = cli.finish(process)

    assert code == 130, out + err
    assert f"Resume with: vgf train --resume {run_dir}" in err
    assert "Traceback" not in err
    # The checkpoint is of the newest step whose row was completely written: the one seen, or the one before it when
    # Ctrl-C came while that row was being written (then resume drops the row and writes it again).
    step = int(re.search(r"checkpoint saved at step (\d+)", err).group(1))
    assert list_checkpoints(run_dir / "checkpoints")[-1][0] == step
    assert STEPS // 2 - LOG_EVERY <= step <= logged_step(run_dir) < STEPS

    code, out, err = cli.run(resume_args(run_dir))
    assert code == 0, out + err
    assert f"resuming {run_dir} from step {step}" in out
    assert_same_as_reference(run_dir)
