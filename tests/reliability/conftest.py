"""Fixtures of the reliability suite: a CLI runner with a shared compilation cache, and the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_runs import CLI, LOG_EVERY, STEPS, final_state, metric_rows, train_args


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> CLI:
    return CLI(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="session")
def background_runs(cli):
    """Runs that depend on nothing, started together so their compiles share the cores: name -> (run dir, process)."""
    runs = {
        "reference": (cli.work_dir / "reference", []),  # the run never interrupted
        "diverged": (cli.work_dir / "diverged", ["--set", "learning_rate=1e38"]),  # a learning rate that overflows
    }
    started = {name: (run_dir, cli.start(train_args(run_dir, *extra), cached=name == "reference")) for name, (run_dir, extra) in runs.items()}
    yield started
    for _, process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def reference_run(cli, background_runs) -> Path:
    """The run never interrupted."""
    run_dir, process = background_runs["reference"]
    code, out, err = cli.finish(process)
    assert code == 0, out + err
    return run_dir


@pytest.fixture(scope="session")
def assert_same_as_reference(reference_run):
    """Checks a finished run against the reference: same final step, identical parameters, identical metric rows."""
    reference_step, reference_leaves = final_state(reference_run)
    reference_rows = metric_rows(reference_run)
    assert reference_step == STEPS
    assert [row["step"] for row in reference_rows] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))

    def check(run_dir: Path) -> None:
        step, leaves = final_state(run_dir)
        assert step == reference_step
        assert len(leaves) == len(reference_leaves)
        for leaf, reference in zip(leaves, reference_leaves):
            np.testing.assert_array_equal(leaf, reference)  # exact, not approximate
        assert metric_rows(run_dir) == reference_rows

    return check
