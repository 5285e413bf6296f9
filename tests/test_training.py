"""Tests for the offline training loop `vgf.training`: run directories, resume, divergence, validation.

All data is generated here (tiny OGBench play data, the bandit): nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform

import jax
import numpy as np
import pytest

from vgf.agents import make_config, with_test_time_settings
from vgf.agents import iql
from vgf.cli import main
from vgf.data import Dataset, DatasetError, generate_ogbench_dataset, make_bandit_dataset
from vgf.training import TrainingDiverged, TrainSettings, list_checkpoints, load_checkpoint, load_run, train

OGBENCH_TASK = "cube-single-play-singletask-task1"
TINY = {"hidden_dims": (32, 32), "batch_size": 32, "num_particles": 4}
# Bandit runs take well under a second once compiled. The 'bandit' preset, chunks of 10 updates and evaluation
# batches of 2 x 100 rows match the known-answer test in test_agents.py, so a full pytest run compiles them once.
BANDIT = dict(task="bandit", preset="bandit", eval_every=20, log_every=10, eval_episodes=100, eval_budgets=(0, 8))


@pytest.fixture(scope="module")
def ogbench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ogbench")
    generate_ogbench_dataset("cube-single-play", out, episodes=2, max_episode_steps=60, progress=False)
    return out


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.slow
def test_end_to_end_tiny_ogbench_run(ogbench_dir, tmp_path):
    run_dir = tmp_path / "run"
    settings = TrainSettings(
        agent="vgf",
        task=OGBENCH_TASK,
        run_dir=str(run_dir),
        data_dir=str(ogbench_dir),
        preset="cpu-small",
        steps=40,
        eval_every=20,
        log_every=10,
        eval_episodes=2,
        eval_budgets=(0, 2),
        overrides=TINY,
    )
    seen = []
    final = train(settings, progress=lambda step, total, row: seen.append((step, total)))
    assert seen == [(10, 40), (20, 40), (30, 40), (40, 40)]
    for budget in (0, 2):
        for name in ("success", "return", "length"):
            assert math.isfinite(final[f"eval/budget_{budget}/{name}"])
        assert 0.0 <= final[f"eval/budget_{budget}/success"] <= 1.0
    assert final["eval/budget_0/length"] == 200  # the OGBench episode length: episodes ran to the time limit

    info = json.loads((run_dir / "config.json").read_text())
    assert info["git_revision"] and isinstance(info["git_revision"], str)
    assert info["settings"]["seed"] == 0 and info["settings"]["task"] == OGBENCH_TASK
    assert info["agent_config"]["hidden_dims"] == [32, 32] and info["agent_config"]["num_particles"] == 4
    assert (info["obs_dim"], info["action_dim"]) == (28, 5)

    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    for row in rows:
        assert math.isfinite(row["train/critic_loss"]) and math.isfinite(row["train/bc_flow_loss"])
    eval_rows = [row for row in rows if "eval/budget_0/success" in row]
    assert [row["step"] for row in eval_rows] == [20, 40]
    assert all("eval/budget_2/success" in row for row in eval_rows)
    # the held-out split's losses come with each evaluation, from the -val file, not the training batches
    assert [row["step"] for row in rows if "val/critic_loss" in row] == [20, 40]
    for row in eval_rows:
        assert math.isfinite(row["val/critic_loss"]) and math.isfinite(row["val/q_mean"])
        assert row["val/critic_loss"] != row["train/critic_loss"]
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and "eval/budget_0/success" in csv_lines[0].split(",")

    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert checkpoints and checkpoints[-1][0] == 40
    plot = run_dir / "plots" / "learning_curve.png"
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    loaded_settings, agent, step = load_run(run_dir)
    assert step == 40 and loaded_settings == dataclasses.replace(settings.with_defaults(), overrides=loaded_settings.overrides)
    _, earlier, earlier_step = load_run(run_dir, step=20)
    assert earlier_step == 20 and int(earlier.critic.step) == 20
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 30 \(kept steps: 0, 20, 40\)"):
        load_run(run_dir, step=30)
    assert agent.config.hidden_dims == (32, 32) and agent.action_dim == 5
    assert int(agent.critic.step) == int(agent.flow.step) == 40  # the restored state is the trained one
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(agent.critic.params))
    initial = load_checkpoint(checkpoints[0][1], agent)  # the step-0 checkpoint, for contrast
    assert checkpoints[0][0] == 0 and int(initial.critic.step) == 0
    assert not np.array_equal(leaves(initial.critic.params)[0], leaves(agent.critic.params)[0])


def test_resume_matches_an_uninterrupted_run(tmp_path):
    dataset = make_bandit_dataset()
    whole = TrainSettings(agent="vgf", run_dir=str(tmp_path / "whole"), steps=40, **BANDIT)
    train(whole, dataset=dataset)
    split = dataclasses.replace(whole, run_dir=str(tmp_path / "split"), steps=20)
    train(split, dataset=dataset)
    assert list_checkpoints(tmp_path / "split" / "checkpoints")[-1][0] == 20
    train(dataclasses.replace(split, steps=40), dataset=dataset)

    _, agent_whole, step_whole = load_run(tmp_path / "whole")
    _, agent_split, step_split = load_run(tmp_path / "split")
    assert step_whole == step_split == 40
    whole_leaves, split_leaves = leaves(agent_whole), leaves(agent_split)
    assert len(whole_leaves) == len(split_leaves)
    for a, b in zip(whole_leaves, split_leaves):
        np.testing.assert_array_equal(a, b)

    rows_whole, rows_split = read_rows(tmp_path / "whole"), read_rows(tmp_path / "split")
    assert [r["step"] for r in rows_whole] == [r["step"] for r in rows_split] == [10, 20, 30, 40]
    for a, b in zip(rows_whole, rows_split):
        train_a = {k: v for k, v in a.items() if k.startswith(("train/", "eval/"))}
        train_b = {k: v for k, v in b.items() if k.startswith(("train/", "eval/"))}
        assert any(k.startswith("train/") for k in train_a)
        assert train_a == train_b, (a["step"], train_a, train_b)


def test_validation_metrics_are_the_update_losses_on_held_out_batches_and_change_nothing():
    from vgf.agents import get_agent
    from vgf.training.offline import VALIDATION_BATCHES, validation_batches, validation_metrics

    dataset = make_bandit_dataset()
    config = make_config("vgf", "bandit")
    agent = jax.jit(get_agent("vgf").create, static_argnums=(0, 1, 2, 3))(config, dataset.obs_dim, dataset.action_dim, 0)
    batches = validation_batches(dataset, 64, seed=3, next_actions=False)
    assert batches["observations"].shape == (VALIDATION_BATCHES, 64, dataset.obs_dim)
    again = validation_batches(dataset, 64, seed=3, next_actions=False)
    assert all(np.array_equal(batches[name], again[name]) for name in batches)  # the same transitions every time
    before = leaves(agent)
    metrics = validation_metrics(agent, batches)
    assert all(np.array_equal(a, b) for a, b in zip(before, leaves(agent)))
    _, critic_key, _ = jax.random.split(agent.rng, 3)  # the key `update` gives its critic loss
    losses = [agent.critic_loss_fn(agent.critic.params, {k: v[i] for k, v in batches.items()}, critic_key)[0]
              for i in range(VALIDATION_BATCHES)]
    np.testing.assert_allclose(float(metrics["critic_loss"]), float(np.mean(losses)), rtol=1e-5)
    assert set(metrics) >= {"critic_loss", "q_mean", "bc_flow_loss"}


@pytest.mark.parametrize("agent_name", ["bc", "avgf", "rejection", "fql", "iql", "rebrac"])
def test_every_agent_reports_held_out_metrics(agent_name):
    from vgf.agents import get_agent, needs_next_actions
    from vgf.training.offline import validation_batches, validation_metrics

    dataset = make_bandit_dataset()
    config = make_config(agent_name, "bandit")
    agent = jax.jit(get_agent(agent_name).create, static_argnums=(0, 1, 2, 3))(config, dataset.obs_dim, dataset.action_dim, 0)
    batches = validation_batches(dataset, 32, seed=0, next_actions=needs_next_actions(agent_name, config))
    metrics = validation_metrics(agent, batches)
    assert "bc_flow_loss" in metrics if agent_name == "bc" else "critic_loss" in metrics
    assert all(np.isfinite(float(value)) for value in metrics.values())


def test_eval_changes_test_time_settings_without_overwriting_the_default(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(TrainSettings(agent="vgf", run_dir=str(run_dir), steps=20, **BANDIT), dataset=make_bandit_dataset())
    trained = read_rows(run_dir)[-1]
    common = ["eval", str(run_dir), "--vgf-steps", "0,8", "--episodes", "100"]
    assert main([*common, "--set", "vgf_lr=0"]) == 0
    still = json.loads((run_dir / "eval" / "budgets_step20-vgf_lr=0.0.json").read_text())  # named as applied
    assert still["test_time_settings"] == {"vgf_lr": 0.0}
    assert (run_dir / "plots" / "budget_curve-vgf_lr=0.0.png").exists()
    assert trained["eval/budget_8/displacement"] > 0.01  # the trained step size moves the particles
    assert still["results"]["8"]["displacement"] == 0.0  # a zero step size leaves every particle where it was sampled
    # the critic's value of the first action against the discounted return (one-step episodes: the reward)
    first = still["results"]["0"]
    assert first["discounted_return"] == pytest.approx(first["return"]) and math.isfinite(first["q_start"])
    # every episode's outcome, for comparisons episode by episode
    assert len(first["per_episode"]["success"]) == 100 and np.mean(first["per_episode"]["success"]) == first["success"]
    assert np.mean(first["per_episode"]["q_start"]) == pytest.approx(first["q_start"])

    capsys.readouterr()
    for setting, words in [
        ("hidden_dims=(8,)", "['hidden_dims']: not a test-time field of agent 'vgf'; test-time fields: num_particles,"),
        ("num_particles=2.5", "num_particles must be int, got 2.5"),
        ("vgf_alpha=-1", "invalid VGF config: vgf_alpha=-1.0"),
    ]:
        assert main([*common, "--set", setting]) == 2
        assert words in " ".join(capsys.readouterr().err.split())
    assert [p.name for p in (run_dir / "eval").iterdir()] == ["budgets_step20-vgf_lr=0.0.json"]

    # plain gradient ascent moves each particle by vgf_lr times its direction: at this step size, far less than Adam
    assert main([*common, "--set", "transport_optimizer=sgd", "--set", "vgf_lr=1e-4"]) == 0
    sgd = json.loads((run_dir / "eval" / "budgets_step20-transport_optimizer=sgd-vgf_lr=0.0001.json").read_text())
    assert 0.0 < sgd["results"]["8"]["displacement"] < 0.1 * trained["eval/budget_8/displacement"]

    assert main([*common, "--step", "0"]) == 0  # a kept earlier checkpoint, evaluated later
    assert json.loads((run_dir / "eval" / "budgets_step0.json").read_text())["step"] == 0
    assert main([*common, "--step", "0", "--seed", "3"]) == 0  # another evaluation seed: a file of its own
    assert json.loads((run_dir / "eval" / "budgets_step0-seed3.json").read_text())["seed"] == 3
    assert json.loads((run_dir / "eval" / "budgets_step0.json").read_text())["seed"] == 0
    capsys.readouterr()
    assert main([*common, "--step", "5"]) == 2
    assert "no checkpoint of step 5 (kept steps: 0, 20)" in " ".join(capsys.readouterr().err.split())


def test_a_run_written_before_the_reference_defaults_keeps_its_network(tmp_path):
    """A config.json from before LayerNorm-before-ReLU, the bandwidth gradient and the three aggregation knobs loads
    with the settings it was trained with, and resuming it under today's defaults is refused, not silently changed."""
    dataset = make_bandit_dataset()
    settings = TrainSettings(agent="vgf", run_dir=str(tmp_path / "old"), steps=10, **BANDIT)
    train(settings, dataset=dataset)
    path = tmp_path / "old" / "config.json"
    info = json.loads(path.read_text())
    stored = info["agent_config"]
    for name in ("critic_layer_norm_order", "bandwidth_gradient", "transport_q_agg", "select_q_agg"):
        del stored[name]
    stored["q_agg"] = "min"  # the one knob that once served transport and pick
    path.write_text(json.dumps(info))

    _, agent, step = load_run(tmp_path / "old")
    assert step == 10
    assert agent.config.critic_layer_norm_order == "post" and agent.config.bandwidth_gradient is False
    assert agent.config.transport_q_agg == agent.config.select_q_agg == "min"
    with pytest.raises(ValueError, match="holds a different run"):
        train(dataclasses.replace(settings, steps=20), dataset=dataset)


def test_a_baseline_run_written_before_the_activation_field_stays_relu(tmp_path):
    """A config.json from before baselines had `activation` (their networks were ReLU) loads as ReLU; resuming it
    under today's GELU default is refused with the field named, never continued as GELU; --set activation=relu
    continues it."""
    dataset = make_bandit_dataset()
    settings = TrainSettings(agent="fql", run_dir=str(tmp_path / "old"), steps=10, overrides={"activation": "relu"}, **BANDIT)
    train(settings, dataset=dataset)
    _, trained, _ = load_run(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    info = json.loads(path.read_text())
    del info["agent_config"]["activation"]  # what vgf wrote then: no such field, and no override
    info["settings"]["overrides"] = {}
    path.write_text(json.dumps(info))

    _, agent, step = load_run(tmp_path / "old")
    assert step == 10 and agent.config.activation == "relu"
    observations, key = np.linspace(-1, 1, 8, dtype=np.float32)[:, None], jax.random.PRNGKey(0)
    np.testing.assert_array_equal(np.asarray(agent.act(observations, key)[0]), np.asarray(trained.act(observations, key)[0]))
    resumed = dataclasses.replace(settings, steps=20, overrides={})
    with pytest.raises(ValueError, match=r"holds a different run: .* activation \('relu' there, 'gelu' now\)"):
        train(resumed, dataset=dataset)
    train(dataclasses.replace(resumed, overrides={"activation": "relu"}), dataset=dataset)
    assert load_run(tmp_path / "old")[2] == 20


def test_a_run_records_its_data_digest_and_refuses_to_resume_on_other_data(tmp_path):
    """config.json names the transitions a run trained on (sha256 of the arrays, not of the file); resuming on data
    that differs, as data remade on another machine does, is refused with both digests; a record from before the
    digest was kept resumes."""
    dataset = make_bandit_dataset()
    settings = TrainSettings(agent="bc", run_dir=str(tmp_path / "run"), steps=10, **BANDIT)
    train(settings, dataset=dataset)
    path = tmp_path / "run" / "config.json"
    recorded = json.loads(path.read_text())["dataset"]["sha256"]
    assert platform.machine() in json.loads(path.read_text())["machine"]  # which CPU made it, beside the versions
    assert recorded == dataset.content_sha256() == make_bandit_dataset().content_sha256()
    remade = dataclasses.replace(dataset, rewards=dataset.rewards + np.float32(1e-3))
    assert remade.content_sha256() != recorded
    with pytest.raises(DatasetError, match=f"trained on data with content sha256 {recorded}.* now holds {remade.content_sha256()}"):
        train(dataclasses.replace(settings, steps=20), dataset=remade)
    info = json.loads(path.read_text())
    del info["dataset"]["sha256"]
    path.write_text(json.dumps(info))
    train(dataclasses.replace(settings, steps=20), dataset=remade)
    assert load_run(tmp_path / "run")[2] == 20
    assert json.loads(path.read_text())["dataset"]["sha256"] == remade.content_sha256()


def test_rebrac_critic_penalty_trains_on_the_dataset_next_actions_offline_only(tmp_path):
    dataset = make_bandit_dataset()
    settings = TrainSettings(agent="rebrac", run_dir=str(tmp_path / "offline"), steps=10, overrides={"alpha_critic": 0.1}, **BANDIT)
    train(settings, dataset=dataset)
    rows = read_rows(tmp_path / "offline")
    assert rows[-1]["step"] == 10 and math.isfinite(rows[-1]["train/critic_loss"])
    online = dataclasses.replace(settings, run_dir=str(tmp_path / "online"), online_steps=10)
    with pytest.raises(ValueError, match="next actions .* which online transitions do not have"):
        train(online, dataset=dataset)
    assert not (tmp_path / "online").exists()


def test_agents_with_a_trained_actor_have_no_test_time_settings():
    agent = iql.create(make_config("iql", "cpu-small", {"hidden_dims": (8,)}), obs_dim=3, action_dim=2)
    assert with_test_time_settings("iql", agent, {}) is agent
    with pytest.raises(ValueError, match=r"test-time fields: none: its actor is a trained network"):
        with_test_time_settings("iql", agent, {"expectile": 0.7})


def test_divergence_raises_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    dataset = make_bandit_dataset()
    settings = TrainSettings(agent="vgf", run_dir=str(tmp_path / "run"), steps=20, **BANDIT)
    train(settings, dataset=dataset)
    # Resume the same run on rewards near the float32 limit: the squared TD error overflows in the next chunk.
    # (Same config and shapes as the run above, so nothing is recompiled.) The changed data is the injected fault,
    # so the check that refuses to resume on other data stands aside.
    monkeypatch.setattr("vgf.training.offline.check_same_data", lambda *args: None)
    arrays = dataset.arrays()
    arrays["rewards"] = np.full_like(arrays["rewards"], 3e38)
    exploding = Dataset.from_arrays(arrays, source="exploding rewards")
    with pytest.raises(TrainingDiverged) as caught:
        train(dataclasses.replace(settings, steps=40), dataset=exploding)
    message = str(caught.value)
    assert "critic_loss" in message, message  # names the loss
    assert "30" in message, message  # the step of the chunk (updates 21-30) where it happened
    assert "step_000000020" in message, message  # and the checkpoint that was kept

    assert list_checkpoints(tmp_path / "run" / "checkpoints")[-1][0] == 20
    assert [row["step"] for row in read_rows(tmp_path / "run")] == [10, 20]
    _, agent, step = load_run(tmp_path / "run")
    assert step == 20
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves(agent) if np.issubdtype(leaf.dtype, np.floating))
    # The kept checkpoint resumes on good data.
    train(dataclasses.replace(settings, steps=30), dataset=dataset)
    assert list_checkpoints(tmp_path / "run" / "checkpoints")[-1][0] == 30


def test_dataset_task_mismatch_is_refused_with_both_shapes(tmp_path):
    run_dir = tmp_path / "run"
    settings = TrainSettings(agent="vgf", task=OGBENCH_TASK, run_dir=str(run_dir), steps=10, overrides=TINY)
    with pytest.raises(ValueError, match=r"observation dim 1 and action dim 2.*observation dim 28 and action dim 5"):
        train(settings, dataset=make_bandit_dataset(num_transitions=100))
    assert not run_dir.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"steps": -1}, "steps must be >= 0"),
        ({"eval_budgets": ()}, "eval_budgets"),
        ({"eval_budgets": (0, -1)}, "eval_budgets"),
        ({"eval_budgets": (1, 1)}, "eval_budgets"),
        ({"eval_every": 0}, "eval_every"),
        ({"log_every": -5}, "log_every"),
        ({"eval_episodes": 0}, "eval_episodes"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"keep_every": 0}, "keep_every must be > 0"),
    ],
)
def test_train_settings_validation(tmp_path, changes, words):
    run_dir = tmp_path / "run"
    settings = TrainSettings(agent="vgf", task="bandit", run_dir=str(run_dir), preset="bandit", **changes)
    with pytest.raises(ValueError, match=words):
        settings.validate()
    with pytest.raises(ValueError, match=words):
        train(settings)
    assert not run_dir.exists()


def test_valid_settings_pass_validation():
    settings = TrainSettings(agent="vgf", task="bandit", run_dir="unused", steps=0, eval_budgets=(0,))
    assert settings.validate() is settings
