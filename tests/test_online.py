"""Tests for offline-to-online training `vgf.training.online`: the replay buffer and its three sampling styles,
terminal vs time-out masks, reward normalisation, and online runs on the bandit (phases, checkpoints, resume)."""

from __future__ import annotations

import dataclasses
import json

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgf.data import Dataset, make_bandit_dataset
from vgf.evaluation import EnvPool
from vgf.training import (
    ReplayBuffer,
    TrainingInterrupted,
    TrainSettings,
    list_checkpoints,
    load_run,
    sample_batch,
    train,
)
from vgf.training.offline import train_seeds
from vgf.training.online import OnlineEnvs, load_replay, replay_path, save_online_checkpoint

# Small networks keep compilation short; every run here shares this config, so it compiles once per session.
ONLINE_BANDIT = dict(
    agent="vgf",
    task="bandit",
    preset="bandit",
    steps=20,
    eval_every=20,
    log_every=10,
    checkpoint_every=10,
    eval_episodes=4,  # evaluation and exploration both act on 4 states at budget 0: one compiled `act`
    eval_budgets=(0,),
    online_steps=40,
    online_envs=4,
    overrides={"hidden_dims": (32, 32), "num_particles": 4, "bc_flow_steps": 2, "batch_size": 32},
)


def marked_data(size: int, sign: float) -> dict[str, jax.Array]:
    """Transitions whose observation is `sign * (row + 1)`, so a sampled row tells where it came from."""
    marks = sign * (np.arange(size, dtype=np.float32) + 1)
    return {
        "observations": jnp.asarray(marks[:, None]),
        "actions": jnp.zeros((size, 2)),
        "rewards": jnp.asarray(marks),
        "next_observations": jnp.asarray(marks[:, None]),
        "masks": jnp.ones(size),
        "terminals": jnp.zeros(size),
    }


def test_replay_buffer_inserts_wraps_and_counts():
    buffer = ReplayBuffer.like(marked_data(1, 1.0), capacity=5)
    assert buffer.capacity == 5 and int(buffer.size) == 0
    buffer = buffer.insert(marked_data(3, -1.0))
    assert (int(buffer.size), int(buffer.position)) == (3, 3)
    np.testing.assert_array_equal(buffer.arrays["rewards"], [-1, -2, -3, 0, 0])
    buffer = buffer.insert(marked_data(4, 10.0))  # 2 rows fill the buffer, 2 overwrite the oldest
    assert (int(buffer.size), int(buffer.position)) == (5, 2)
    np.testing.assert_array_equal(buffer.arrays["rewards"], [30, 40, -3, 10, 20])


def test_a_replay_file_restores_into_a_larger_buffer(tmp_path):
    full = ReplayBuffer.like(marked_data(1, 1.0), capacity=3).insert(marked_data(4, 1.0))  # wrapped: rows 4, 2, 3
    save_online_checkpoint(tmp_path, 7, {"agent": jnp.zeros(1)}, full, keep=3)
    larger = load_replay(tmp_path, 7, ReplayBuffer.like(marked_data(1, 1.0), capacity=5))  # --online-steps extended
    assert (larger.capacity, int(larger.size), int(larger.position)) == (5, 3, 3)
    np.testing.assert_array_equal(larger.arrays["rewards"], [2, 3, 4, 0, 0])
    with pytest.raises(ValueError, match="no replay buffer beside it"):
        load_replay(tmp_path, 8, larger)


def test_sampling_styles_draw_from_the_right_sources():
    data = marked_data(50, 1.0)  # dataset rows are positive
    buffer = ReplayBuffer.like(data, capacity=40).insert(marked_data(10, -1.0))  # online rows negative, 30 rows empty
    key = jax.random.PRNGKey(0)

    online = sample_batch("online", data, buffer, key, 64)["observations"][:, 0]
    assert bool(jnp.all(online < 0))  # only written online rows, never the empty (zero) ones

    rlpd = sample_batch("rlpd", data, buffer, key, 65)["observations"][:, 0]
    assert rlpd.shape == (65,)
    assert bool(jnp.all(rlpd[:33] > 0)) and bool(jnp.all(rlpd[33:] < 0))  # exactly 33 dataset rows, then 32 online

    union = sample_batch("dataset", data, buffer, key, 6000)
    marks = union["observations"][:, 0]
    assert bool(jnp.all(marks != 0))
    np.testing.assert_allclose(float(jnp.mean(marks < 0)), 10 / 60, atol=0.02)  # uniform over 50 + 10 rows
    np.testing.assert_array_equal(union["rewards"], marks)  # every key of a row comes from the same transition

    with pytest.raises(ValueError, match="unknown replay style 'mixed'"):
        sample_batch("mixed", data, buffer, key, 8)


class ScriptedEnv(gymnasium.Env):
    """Observation = steps taken; an action above 0.5 terminates (a success); reward 1 per step."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        terminated = bool(action[0] > 0.5)
        return np.full(1, self.steps, np.float32), 1.0, terminated, False, {"success": float(terminated)}


def test_masks_are_zero_only_at_true_terminals():
    pool = EnvPool(lambda: gymnasium.wrappers.TimeLimit(ScriptedEnv(), max_episode_steps=2))
    envs = OnlineEnvs(pool, 2, np.random.default_rng(0))
    first = envs.step(np.array([[1.0], [0.0]]), scale=2.0)  # env 0 terminates, env 1 goes on
    np.testing.assert_array_equal(first["masks"], [0.0, 1.0])
    np.testing.assert_array_equal(first["terminals"], [1.0, 0.0])
    np.testing.assert_array_equal(first["rewards"], [2.0, 2.0])  # scaled
    np.testing.assert_array_equal(first["next_observations"][:, 0], [1.0, 1.0])  # the final observation, not the reset
    np.testing.assert_array_equal(envs.observations[:, 0], [0.0, 1.0])  # env 0 was reset
    second = envs.step(np.array([[0.0], [0.0]]), scale=2.0)  # env 1 hits the time limit
    np.testing.assert_array_equal(second["masks"], [1.0, 1.0])  # a time-out still bootstraps
    np.testing.assert_array_equal(second["terminals"], [0.0, 1.0])
    np.testing.assert_array_equal(second["next_observations"][:, 0], [1.0, 2.0])
    episodes = envs.take_episodes()
    assert episodes == {"online/episodes": 2.0, "online/episode_return": 1.5, "online/success": 0.5,
                        "online/episode_length": 1.5}
    assert envs.take_episodes() == {"online/episodes": 0.0}
    pool.close()


def test_the_reward_scale_spans_the_return_range():
    arrays = {
        "observations": np.zeros((5, 1), np.float32),
        "actions": np.zeros((5, 2), np.float32),
        "rewards": np.array([1, 1, 1, 0, 0], np.float32),  # episodes return 3 and 0
        "next_observations": np.zeros((5, 1), np.float32),
        "terminals": np.array([0, 0, 1, 0, 1], np.float32),
    }
    assert Dataset.from_arrays(arrays).return_range_scale() == pytest.approx(1000 / 3)
    arrays["rewards"] = np.ones(5, np.float32)  # returns 3 and 2
    assert Dataset.from_arrays(arrays).return_range_scale() == pytest.approx(1000.0)
    arrays["rewards"] = np.array([1, 1, 1, 1, 2], np.float32)  # returns 3 and 3
    with pytest.raises(ValueError, match="different returns"):
        Dataset.from_arrays(arrays).return_range_scale()


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_online_run_marks_phases_and_resumes_after_an_interrupt(tmp_path):
    dataset = make_bandit_dataset()
    whole = TrainSettings(run_dir=str(tmp_path / "whole"), **ONLINE_BANDIT)
    final = train(whole, dataset=dataset)
    assert 0.0 <= final["eval/budget_0/success"] <= 1.0

    rows = read_rows(tmp_path / "whole")
    # Online rows land on the first env step (4 transitions each) that reaches a log step.
    assert [(row["step"], row["phase"]) for row in rows] == [
        (10, "offline"), (20, "offline"), (32, "online"), (40, "online"), (52, "online"), (60, "online")
    ]
    online = [row for row in rows if row["phase"] == "online"]
    assert [row["online/buffer_size"] for row in online] == [12, 20, 32, 40]
    assert [row["online/env_steps"] for row in online] == [12, 20, 32, 40]
    assert [row["online/episodes"] for row in online] == [12, 8, 12, 8]  # one-step episodes
    assert all(0.0 <= row["online/success"] <= 1.0 and "train/critic_loss" in row for row in online)
    assert [row["step"] for row in rows if "eval/budget_0/success" in row] == [20, 40, 60]
    assert (tmp_path / "whole" / "plots" / "learning_curve.png").exists()
    checkpoints = dict(list_checkpoints(tmp_path / "whole" / "checkpoints"))
    assert sorted(checkpoints) == [40, 52, 60]
    assert all(replay_path(tmp_path / "whole" / "checkpoints", step).exists() for step in checkpoints)
    assert len(list((tmp_path / "whole" / "checkpoints").glob("replay_*"))) == 3  # pruned with their checkpoints

    # The same run, interrupted at step 40 (inside the online phase) and resumed.
    split = dataclasses.replace(whole, run_dir=str(tmp_path / "split"))

    def interrupt_at_40(step, total, row):
        assert total == 60
        if step == 40:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="checkpoint saved at step 40"):
        train(split, dataset=dataset, progress=interrupt_at_40)
    assert list_checkpoints(tmp_path / "split" / "checkpoints")[-1][0] == 40
    train(split, dataset=dataset)
    split_rows = read_rows(tmp_path / "split")
    assert [(row["step"], row["phase"]) for row in split_rows] == [(row["step"], row["phase"]) for row in rows]
    for a, b in zip(rows[:4], split_rows[:4]):  # identical up to the interrupt
        assert {k: v for k, v in a.items() if k.startswith(("train/", "eval/", "online/"))} == \
               {k: v for k, v in b.items() if k.startswith(("train/", "eval/", "online/"))}
    # The buffer was restored, not refilled from empty: it holds all 40 online transitions at the end.
    _, agent, step = load_run(tmp_path / "split")
    assert step == 60
    template = ReplayBuffer.like({k: jnp.asarray(v) for k, v in dataset.arrays().items()}, 40)
    buffer = load_replay(tmp_path / "split" / "checkpoints", 60, template)
    assert int(buffer.size) == 40
    assert int(agent.critic.step) == 20 + 40  # one update per online transition

    # Once a run is in its online phase, its offline length cannot change.
    with pytest.raises(ValueError, match="online phase"):
        train(dataclasses.replace(split, steps=28, online_steps=32), dataset=dataset)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"online_steps": -4}, "online_steps must be >= 0"),
        ({"replay": "mixed"}, "replay must be one of dataset, rlpd, online"),
        ({"online_envs": 0}, "online_envs must be >= 1"),
        ({"online_steps": 10, "online_envs": 4}, r"multiple of online_envs"),
        ({"updates_per_env_step": 0}, "updates_per_env_step"),
        ({"explore_vgf_steps": -1}, "explore_vgf_steps"),
    ],
)
def test_online_settings_validation(tmp_path, changes, words):
    settings = TrainSettings(run_dir=str(tmp_path / "run"), **{**ONLINE_BANDIT, **changes})
    with pytest.raises(ValueError, match=words):
        train(settings)
    assert not (tmp_path / "run").exists()


def test_several_seeds_with_online_steps_are_refused(tmp_path):
    group = [TrainSettings(run_dir=str(tmp_path / f"s{seed}"), seed=seed, **ONLINE_BANDIT) for seed in (0, 1)]
    with pytest.raises(ValueError, match="one seed at a time"):
        train_seeds(group)
    assert not any(tmp_path.iterdir())


def test_cli_refuses_several_seeds_with_online_steps_before_training(tmp_path, capsys):
    from vgf.cli import main

    flags = ["train", "vgf", "--task", "bandit", "--preset", "bandit", "--steps", "10", "--online-steps", "10"]
    assert main([*flags, "--seeds", "0,1", "--run-dir", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    assert "one seed at a time" in captured.err
    assert "training" not in captured.out  # no progress display was started
    assert not (tmp_path / "runs").exists()
