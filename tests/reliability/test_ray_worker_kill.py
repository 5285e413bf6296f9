"""A Ray worker killed mid-run (the OOM killer, a lost node, preemption): the run is retried, resumes from its last
checkpoint, and ends with exactly the record of the same run never interrupted."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import threading
import time

import numpy as np
import pytest
from cli_runs import TIMEOUT, final_state, logged_step, metric_rows

from vgf.agents import make_config
from vgf.sweep import RunSpec, RunState, run_grid
from vgf.training.lock import LOCK_FILE

STEPS, EVAL_EVERY = 120, 20  # a sweep run logs, evaluates and checkpoints every EVAL_EVERY steps


def kill_the_worker_after_a_row(run_dir, step: int, rng: random.Random, killed: dict) -> None:
    """SIGKILL the process training `run_dir` (its lock file names it) once the row of `step` is written, plus up to
    a row's worth of time, so the kill may also land in an evaluation or a checkpoint write."""
    deadline = time.monotonic() + TIMEOUT
    while logged_step(run_dir) < step:
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    holder = json.loads((run_dir / LOCK_FILE).read_text())
    time.sleep(rng.uniform(0.0, 0.05))
    assert holder["pid"] != os.getpid()
    os.kill(holder["pid"], signal.SIGKILL)
    killed.update(pid=holder["pid"], step=logged_step(run_dir))


@pytest.mark.slow
def test_a_killed_worker_is_retried_resumes_from_its_checkpoint_and_matches_the_uninterrupted_run(cli, tmp_path, monkeypatch):
    import ray

    for name, value in cli.cache.items():  # the workers inherit it: the retry does not compile again
        monkeypatch.setenv(name, value)

    spec = RunSpec(agent="vgf", task="bandit", seed=0, preset="bandit", steps=STEPS, eval_every=EVAL_EVERY,
                   eval_episodes=10, eval_budgets=(0, 2))
    # The same run under another name, trained alongside: an override equal to the preset's own value changes the
    # run's directory, not its training.
    twin = dataclasses.replace(spec, overrides=(("batch_size", make_config("vgf", "bandit").batch_size),))
    results = tmp_path / "results"
    rng = random.Random(31337)
    target = rng.randrange(2 * EVAL_EVERY, STEPS * 3 // 4 + 1, EVAL_EVERY)  # by then a checkpoint after step 0 exists
    killed: dict = {}
    killer = threading.Thread(target=kill_the_worker_after_a_row, args=(spec.run_dir(results), target, rng, killed))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        killer.start()
        statuses = {status.spec.name: status for status in run_grid([spec, twin], results, retries=1)}
    finally:
        killer.join()
        ray.shutdown()
    print(f"killed worker {killed.get('pid')} after the row of step {killed.get('step')}")

    status = statuses[spec.name]
    assert killed, f"the run ended before its row of step {target}"
    assert (status.state, status.attempts) == (RunState.DONE, 2)
    assert killed["step"] - EVAL_EVERY <= status.resumed_from <= killed["step"] and status.resumed_from > 0
    assert (statuses[twin.name].state, statuses[twin.name].attempts) == (RunState.DONE, 1)
    run_dir, twin_dir = spec.run_dir(results), twin.run_dir(results)
    assert metric_rows(run_dir) == metric_rows(twin_dir)
    (step, leaves), (twin_step, twin_leaves) = final_state(run_dir), final_state(twin_dir)
    assert step == twin_step == STEPS and len(leaves) == len(twin_leaves)
    for leaf, twin_leaf in zip(leaves, twin_leaves):
        np.testing.assert_array_equal(leaf, twin_leaf)  # exact
    assert not (run_dir / LOCK_FILE).exists() and not (run_dir / "failure.json").exists()
