"""`vgf bench` stopped by signals: SIGTERM to a run's worker checkpoints its last logged step and the retry resumes
there; SIGTERM to the driver stops every run at its last logged step (exit 130), and the same command finishes."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from cli_runs import CLI, TIMEOUT, final_state, logged_step, wait_for_step

from vgf.training import list_checkpoints
from vgf.training.lock import LOCK_FILE

STEPS, EVAL_EVERY, LOG_EVERY = 3000, 1500, 500  # a bench run logs every min(500, eval_every) steps
# A signal that lands while a row is being written checkpoints the row before it, so each stop is two rows after the
# last scheduled checkpoint: either of the two rows it may save is off the schedule.
WORKER_STOP, DRIVER_STOP = 2 * LOG_EVERY, 5 * LOG_EVERY


def wait_for_checkpoint(run_dir, steps: tuple[int, ...]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not set(steps) & {found for found, _ in list_checkpoints(run_dir / "checkpoints")}:
        assert time.monotonic() < deadline, f"no checkpoint of any step in {steps} within {TIMEOUT} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_to_a_worker_is_retried_from_its_logged_step_and_to_the_driver_stops_the_bench_resumably(tmp_path):
    cli = CLI(tmp_path)  # a compilation cache of its own: the suite's shared one may be written by a run alongside
    results = tmp_path / "results"
    args = ["bench", "--agents", "vgf", "--tasks", "bandit", "--preset", "bandit", "--seeds", "0", "--steps", str(STEPS),
            "--eval-every", str(EVAL_EVERY), "--eval-episodes", "10", "--num-cpus", "1", "--results-dir", str(results)]
    run_dir = results / "vgf-bandit-s0"
    process = cli.start(args)

    # A worker told to stop (a node shutting down, a scheduler) checkpoints its newest logged step, off the schedule.
    wait_for_step(process, run_dir, WORKER_STOP)
    worker = json.loads((run_dir / LOCK_FILE).read_text())["pid"]
    os.kill(worker, signal.SIGTERM)
    wait_for_checkpoint(run_dir, (WORKER_STOP - LOG_EVERY, WORKER_STOP))

    # The retry resumes there; the driver told to stop has the run checkpoint its newest logged step, again off schedule.
    wait_for_step(process, run_dir, DRIVER_STOP)
    process.send_signal(signal.SIGTERM)
    code, out, err = cli.finish(process)
    assert code == 130, out + err
    stopped = re.search(r"retrying \(attempt 2\) after: RunStopped: stopped by a signal; checkpoint saved at step (\d+)", out)
    assert stopped and int(stopped.group(1)) in (WORKER_STOP - LOG_EVERY, WORKER_STOP), out
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    newest = list_checkpoints(run_dir / "checkpoints")[-1][0]
    assert newest in (DRIVER_STOP - LOG_EVERY, DRIVER_STOP) and newest <= logged_step(run_dir)  # as in test_sigint.py

    code, out, err = cli.run(args)
    assert code == 0, out + err
    assert final_state(run_dir)[0] == STEPS
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
