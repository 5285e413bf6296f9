"""Tests for the high-level API (`vgf.fit`, `vgf.load_policy`): tiny bandit runs, a Gymnasium loop, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vgf
from vgf.cli import main
from vgf.data import Dataset, make_bandit_dataset
from vgf.envs import make_env

# The 'bandit' preset with chunks of 10 updates and evaluation batches of 2 x 100, as in test_training.py.
BANDIT = dict(preset="bandit", steps=20, eval_every=20, log_every=10, eval_episodes=100, eval_budgets=(0, 8))


@pytest.fixture(scope="module")
def vgf_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("api") / "vgf-bandit"
    returned = vgf.fit(make_bandit_dataset(), agent="vgf", task="bandit", run_dir=run_dir, **BANDIT)
    assert returned == run_dir
    return run_dir


def test_fit_writes_a_run_directory_like_vgf_train(vgf_run):
    rows = [json.loads(line) for line in (vgf_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20] and "eval/budget_8/success" in rows[-1]
    info = json.loads((vgf_run / "config.json").read_text())
    assert (info["settings"]["agent"], info["settings"]["task"], info["obs_dim"], info["action_dim"]) == ("vgf", "bandit", 1, 2)


def test_a_policy_acts_on_one_observation_or_a_batch_with_explicit_seeds(vgf_run):
    policy = vgf.load_policy(vgf_run, seed=3)
    assert (policy.observation_dim, policy.action_dim, policy.step, policy.default_budget) == (1, 2, 20, 8)
    one = policy.act(np.array([0.3], dtype=np.float32))
    batch = policy.act(np.linspace(-1, 1, 16, dtype=np.float32)[:, None], budget=2)
    assert one.shape == (2,) and batch.shape == (16, 2)
    assert isinstance(one, np.ndarray) and np.all(np.abs(batch) <= 1.0)

    observations = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
    again = vgf.load_policy(vgf_run, seed=3)
    first_calls = [policy.act(observations) for _ in range(2)]
    # A fresh policy with the same seed replays the same key sequence (after the two calls `policy` made above).
    again.act(observations[0]), again.act(observations, budget=2)
    np.testing.assert_array_equal(again.act(observations), first_calls[0])
    assert not np.array_equal(first_calls[0], first_calls[1])  # each call draws new reference particles
    # act(seed=) is the same action for the same seed, whatever the policy's sequence.
    np.testing.assert_array_equal(policy.act(observations, seed=7), again.act(observations, seed=7))
    assert not np.array_equal(policy.act(observations, seed=7), policy.act(observations, seed=8))


def test_a_policy_drives_a_gymnasium_episode_loop(vgf_run):
    policy = vgf.load_policy(vgf_run, seed=0)
    env = make_env("bandit")
    observation, _ = env.reset(seed=0)
    rewards = []
    for _ in range(20):
        observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
        rewards.append(reward)
        if terminated or truncated:
            observation, _ = env.reset()
    assert len(rewards) == 20 and all(0.0 <= r <= 1.0 for r in rewards)


@pytest.mark.parametrize(
    "observation, expected",
    [
        (np.zeros(3, dtype=np.float32), r"observation must have shape \[1\] or \[B, 1\], got \[3\]"),
        (np.zeros((4, 2), dtype=np.float32), r"shape \[1\] or \[B, 1\], got \[4, 2\]"),
        (np.zeros((2, 2, 1), dtype=np.float32), r"got \[2, 2, 1\]"),
    ],
)
def test_wrong_observation_shapes_name_the_expected_and_the_given_shape(vgf_run, observation, expected):
    with pytest.raises(ValueError, match=expected):
        vgf.load_policy(vgf_run).act(observation)


def test_an_agent_without_transport_refuses_a_budget_and_accepts_zero(tmp_path):
    run_dir = vgf.fit(make_bandit_dataset(num_transitions=500), agent="bc", task="bandit", run_dir=tmp_path / "bc", **BANDIT)
    policy = vgf.load_policy(run_dir)
    assert policy.default_budget == 0 and policy.act(np.zeros(1), budget=0).shape == (2,)
    with pytest.raises(ValueError, match=r"agent 'bc' has no transport budget .* got budget=4"):
        policy.act(np.zeros(1), budget=4)


def test_fit_trains_on_arrays_with_no_environment_and_eval_says_why_it_cannot_evaluate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    actions = np.tanh(observations[:, :2] + 0.1 * rng.standard_normal((300, 2))).astype(np.float32)
    dataset = Dataset.from_arrays({
        "observations": observations,
        "actions": actions,
        "rewards": -np.square(actions - 0.5).sum(-1),
        "next_observations": observations,
        "terminals": np.ones(300),
    }, source="my arrays")
    run_dir = vgf.fit(dataset, agent="vgf", run_dir=tmp_path / "mine", preset="bandit", steps=20, log_every=10)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20] and not any(key.startswith("eval/") for row in rows for key in row)
    policy = vgf.load_policy(run_dir)
    assert (policy.observation_dim, policy.action_dim) == (3, 2) and policy.act(observations[:7]).shape == (7, 2)
    assert main(["eval", str(run_dir)]) == 2
    assert "trained on a dataset without a task (vgf.fit): it has no environment" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a run without a task trains on the dataset it is given"):
        vgf.fit(None, agent="vgf", run_dir=tmp_path / "nothing", steps=20)
