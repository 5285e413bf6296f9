"""Input and configuration errors: refused with the valid choices or both shapes, before any data is loaded."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from cli_runs import STEPS, train_args

from vgf.cli import main
from vgf.data import Dataset
from vgf.training import TrainSettings, train
from vgf.training import offline


@pytest.fixture
def no_work(monkeypatch):
    """Any attempt to load a dataset fails the test: refusals must come before it."""

    def load_task_datasets(*args, **kwargs):
        raise AssertionError("a dataset was loaded before the input was refused")

    monkeypatch.setattr(offline, "load_task_datasets", load_task_datasets)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit with code 2. Returns its stderr with whitespace collapsed."""
    assert main(argv) == 2
    return " ".join(capsys.readouterr().err.split())


UNKNOWN_NAMES = [
    (["--preset", "huge"], "unknown preset 'huge' for agent 'vgf'; valid presets: paper, paper-d4rl, cpu-small, bandit"),
    (["--task", "cube-single-play-singletask-task9"], "unknown task 'cube-single-play-singletask-task9'; valid tasks are 'bandit', 'd4rl:"),
    (["--set", "num_particle=4"], "unknown config field(s) ['num_particle'] for agent 'vgf'; valid fields: hidden_dims,"),
]
BAD_NUMBERS = [
    (["--steps", "-1"], "steps must be >= 0, got -1"),
    (["--eval-every", "0"], "eval_every must be > 0, got 0"),
    (["--log-every", "-5"], "log_every must be > 0, got -5"),
    (["--checkpoint-every", "0"], "checkpoint_every must be > 0, got 0"),
    (["--keep-checkpoints", "0"], "keep_checkpoints must be >= 1, got 0"),
    (["--eval-episodes", "0"], "eval_episodes must be > 0, got 0"),
    (["--eval-workers", "-1"], "eval_workers must be >= 0, got -1"),
    (["--eval-budgets", "-1"], "eval_budgets must be distinct non-negative integers, got [-1]"),
    (["--eval-budgets", "2,2"], "eval_budgets must be distinct non-negative integers, got [2, 2]"),
    (["--set", "num_particles=0"], "invalid VGF config: num_particles=0"),
    (["--set", "batch_size=-8"], "invalid VGF config: batch_size=-8"),
    (["--set", "discount=1.5"], "invalid VGF config: discount=1.5"),
    (["--set", "learning_rate=-1"], "invalid VGF config: learning_rate=-1"),
    (["--steps", "-1", "--eval-episodes", "0"], "steps must be >= 0, got -1; eval_episodes must be > 0, got 0"),
]


def case_id(flags: list[str]) -> str:
    return " ".join(flags)


@pytest.mark.parametrize("flags, expected", UNKNOWN_NAMES, ids=[case_id(flags) for flags, _ in UNKNOWN_NAMES])
def test_unknown_names_list_the_valid_ones(flags, expected, no_work, tmp_path, capsys):
    assert expected in refused(train_args(tmp_path / "run", *flags), capsys)  # a repeated option: the last one wins
    assert not (tmp_path / "run").exists()


def test_unknown_agent_lists_the_valid_ones(no_work, tmp_path, capsys):
    argv = train_args(tmp_path / "run")
    argv[argv.index("vgf")] = "ppo"
    assert "unknown agent 'ppo'; valid agents: avgf, bc, fql, iql, rebrac, rejection, vgf" in refused(argv, capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, expected", BAD_NUMBERS, ids=[case_id(flags) for flags, _ in BAD_NUMBERS])
def test_bad_numbers_are_refused_before_any_work(flags, expected, no_work, tmp_path, capsys):
    assert expected in refused(train_args(tmp_path / "run", *flags), capsys)
    assert not (tmp_path / "run").exists()


def test_dataset_that_does_not_match_the_environment_is_refused_with_both_shapes(tmp_path):
    n = 16
    arrays = {
        "observations": np.zeros((n, 3), np.float32),
        "actions": np.zeros((n, 4), np.float32),
        "rewards": np.zeros(n, np.float32),
        "next_observations": np.zeros((n, 3), np.float32),
        "terminals": np.ones(n, np.float32),
    }
    settings = TrainSettings(agent="vgf", task="bandit", preset="bandit", run_dir=str(tmp_path / "run"), steps=10)
    with pytest.raises(ValueError) as error:
        train(settings, dataset=Dataset.from_arrays(arrays, source="mine.npz"))
    message = str(error.value)
    assert "dataset mine.npz has observation dim 3 and action dim 4" in message
    assert "task 'bandit' expects observation dim 1 and action dim 2" in message
    assert not (tmp_path / "run").exists()


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert "is not a vgf run directory" in refused(["train", "--resume", str(tmp_path)], capsys)


def test_eval_budgets_are_checked_before_loading_the_run(tmp_path, capsys):
    assert "--vgf-steps must be non-negative" in refused(["eval", str(tmp_path / "missing"), "--vgf-steps", "0,-2"], capsys)


def test_a_run_directory_holding_another_run_is_not_overwritten(reference_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    before = {path.name: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert "holds a different run (vgf on bandit, seed 0" in refused(train_args(run_dir, "--seed", "1"), capsys)
    assert "holds a different run" in refused(train_args(run_dir, "--set", "hidden_dims=(64, 64)"), capsys)
    assert f"is at step {STEPS}, past the requested 50 steps" in refused(["train", "--resume", str(run_dir), "--steps", "50"], capsys)
    assert {path.name: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_real_cli_exit_code_and_message(cli, tmp_path):
    code, out, err = cli.run(train_args(tmp_path / "run", "--set", "num_particles=0"))
    assert code == 2
    assert "error: invalid VGF config: num_particles=0" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
