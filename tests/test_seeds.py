"""Several seeds in one process (`train_seeds`, `vgf train --seeds`): each seed matches training it alone.

Bandit data only (generated here), the `bandit` preset: each run takes seconds once compiled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from vgf.data import Dataset, make_bandit_dataset
from vgf.training import TrainingDiverged, TrainSettings, list_checkpoints, load_run, train
from vgf.training.offline import train_seeds
from vgf.training.run import seed_group

BANDIT = dict(task="bandit", preset="bandit", eval_every=20, log_every=10, eval_episodes=100, eval_budgets=(0, 8))
SEEDS = (0, 1)  # two seeds everywhere: one compiled vmapped chunk serves every test here


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def group(tmp_path, name: str, steps: int, seeds=SEEDS) -> list[TrainSettings]:
    return [
        TrainSettings(agent="vgf", run_dir=str(tmp_path / name / f"s{seed}"), seed=seed, steps=steps, **BANDIT)
        for seed in seeds
    ]


def assert_same_run(run_a, run_b, rtol=1e-4, atol=1e-5):
    _, agent_a, step_a = load_run(run_a)
    _, agent_b, step_b = load_run(run_b)
    assert step_a == step_b
    for a, b in zip(jax.tree_util.tree_leaves(agent_a), jax.tree_util.tree_leaves(agent_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
    rows_a, rows_b = read_rows(run_a), read_rows(run_b)
    assert [row["step"] for row in rows_a] == [row["step"] for row in rows_b]
    for row_a, row_b in zip(rows_a, rows_b):
        metrics = [key for key in row_a if key.startswith(("train/", "eval/"))]
        assert metrics and metrics == [key for key in row_b if key.startswith(("train/", "eval/"))]
        for key in metrics:
            assert row_a[key] == pytest.approx(row_b[key], rel=1e-3, abs=1e-3), (row_a["step"], key)


@pytest.fixture(scope="module")
def dataset():
    return make_bandit_dataset()


@pytest.fixture(scope="module")
def vmapped_runs(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("seeds")
    finals = train_seeds(group(root, "together", 40), dataset=dataset)
    return root, finals


def test_each_vmapped_seed_matches_training_it_alone(vmapped_runs, dataset):
    root, finals = vmapped_runs
    for seed, final in zip(SEEDS, finals):
        alone = group(root, "alone", 40)[SEEDS.index(seed)]
        final_alone = train(alone, dataset=dataset)
        assert final.keys() == final_alone.keys()
        assert_same_run(root / "together" / f"s{seed}", root / "alone" / f"s{seed}")
        info = json.loads((root / "together" / f"s{seed}" / "config.json").read_text())
        assert info["settings"]["seed"] == seed


def test_seeds_differ_from_each_other(vmapped_runs):
    root, _ = vmapped_runs
    _, agent_0, _ = load_run(root / "together" / "s0")
    _, agent_1, _ = load_run(root / "together" / "s1")
    first_0 = np.asarray(jax.tree_util.tree_leaves(agent_0.critic.params)[0])
    first_1 = np.asarray(jax.tree_util.tree_leaves(agent_1.critic.params)[0])
    assert not np.allclose(first_0, first_1)


def test_rows_record_the_seeds_trained_together(vmapped_runs):
    root, _ = vmapped_runs
    rows = read_rows(root / "together" / "s1")
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    assert all(row["seeds_together"] == len(SEEDS) for row in rows)
    assert (root / "together" / "s1" / "plots" / "learning_curve.png").exists()


def test_resume_when_one_seed_lost_its_newest_checkpoint(tmp_path, dataset):
    """A kill between two seeds' checkpoint writes leaves one seed behind: all resume from the common step."""
    whole = group(tmp_path, "whole", 40, seeds=(0, 1))
    train_seeds(whole, dataset=dataset)
    split = group(tmp_path, "split", 20, seeds=(0, 1))
    train_seeds(split, dataset=dataset)
    newest = list_checkpoints(tmp_path / "split" / "s1" / "checkpoints")[-1]
    assert newest[0] == 20
    newest[1].unlink()  # seed 1 is back at step 0; seed 0 keeps step 20
    train_seeds([dataclasses.replace(s, steps=40) for s in split], dataset=dataset)
    for seed in (0, 1):
        assert_same_run(tmp_path / "whole" / f"s{seed}", tmp_path / "split" / f"s{seed}", rtol=0, atol=0)


def test_diverged_seeds_each_name_their_run_and_keep_a_good_checkpoint(tmp_path, dataset, monkeypatch):
    settings = group(tmp_path, "run", 20, seeds=(0, 1))
    train_seeds(settings, dataset=dataset)
    monkeypatch.setattr("vgf.training.offline.check_same_data", lambda *args: None)  # the changed data is the fault
    arrays = dataset.arrays()
    arrays["rewards"] = np.full_like(arrays["rewards"], 3e38)
    exploding = Dataset.from_arrays(arrays, source="exploding rewards")
    with pytest.raises(TrainingDiverged, match=r"s0.*critic_loss.*s1.*critic_loss"):
        train_seeds([dataclasses.replace(s, steps=40) for s in settings], dataset=exploding)
    for seed in (0, 1):
        assert list_checkpoints(tmp_path / "run" / f"s{seed}" / "checkpoints")[-1][0] == 20


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: dataclasses.replace(s, seed=0), "distinct"),
        (lambda s: dataclasses.replace(s, run_dir=s.run_dir.replace("s1", "s0")), "own run directory"),
        (lambda s: dataclasses.replace(s, steps=99), "share every setting"),
    ],
)
def test_invalid_seed_groups_are_refused_before_writing(tmp_path, change, words):
    first, second = group(tmp_path, "bad", 20, seeds=(0, 1))
    with pytest.raises(ValueError, match=words):
        train_seeds([first, change(second)])
    assert not (tmp_path / "bad").exists()


def test_each_seed_of_a_call_gets_its_run_directory():
    base = TrainSettings(agent="vgf", task="minari:D4RL/door/human-v2", run_dir="", seed=3)
    name = "vgf-minari_D4RL_door_human-v2"  # the task name made one directory name
    assert [(s.seed, s.run_dir, s.group) for s in seed_group(base, None, None)] == [(3, f"runs/{name}-s3", None)]
    assert seed_group(base, None, "out/one")[0].run_dir == "out/one"
    assert [(s.seed, s.run_dir, s.group) for s in seed_group(base, (0, 1), "out/cube")] == [
        (0, str(Path("out/cube/s0")), "cube"),
        (1, str(Path("out/cube/s1")), "cube"),
    ]
    assert [(s.run_dir, s.group) for s in seed_group(base, (2,), None)] == [(f"runs/{name}-s2", name)]
