"""Ctrl-C: a checkpoint of the last logged step, exit code 130, the resume command; resuming completes the same run."""

from __future__ import annotations

import re
import signal

import pytest
from cli_runs import LOG_EVERY, STEPS, logged_step, resume_args, train_args, wait_for_step

from vgf.training import list_checkpoints


INTERRUPT_AFTER = 3 * LOG_EVERY  # neither a checkpoint nor an evaluation step: the checkpoint comes from the interrupt


def interrupted_run(cli, tmp_path, attempts: int = 3):
    """(run dir, exit code, stdout, stderr) of a run sent SIGINT once its row of `INTERRUPT_AFTER` is written.

    With the compilation cache a run takes about a second, so on a busy machine it can end before this process
    sees that row; such a run is started again in a fresh directory.
    """
    for attempt in range(attempts):
        run_dir = tmp_path / f"run{attempt}"
        process = cli.start(train_args(run_dir))
        wait_for_step(process, run_dir, INTERRUPT_AFTER)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            return (run_dir, *cli.finish(process))
        cli.finish(process)
    pytest.fail(f"every one of {attempts} runs ended before it could be interrupted")


@pytest.mark.slow
def test_sigint_checkpoints_prints_resume_command_and_resume_matches_uninterrupted_run(cli, reference_run, assert_same_as_reference, tmp_path):
    run_dir, code, out, err = interrupted_run(cli, tmp_path)

    assert code == 130, out + err
    assert f"Resume with: vgf train --resume {run_dir}" in err
    assert "Traceback" not in err
    # The checkpoint is of the newest step whose row was completely written: the one seen, or the one before it when
    # Ctrl-C came while that row was being written (then resume drops the row and writes it again).
    step = int(re.search(r"checkpoint saved at step (\d+)", err).group(1))
    assert list_checkpoints(run_dir / "checkpoints")[-1][0] == step
    assert INTERRUPT_AFTER - LOG_EVERY <= step <= logged_step(run_dir) < STEPS

    code, out, err = cli.run(resume_args(run_dir))
    assert code == 0, out + err
    assert f"resuming {run_dir} from step {step}" in out
    assert_same_as_reference(run_dir)
