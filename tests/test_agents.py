"""Tests for the agents: configs and presets, the VGF update and act, and the known-answer bandit.

The bandit test is the method's known-answer check: with a behavior policy that rarely plays the best
in-support action, cloning it is poor, while VGF (flow BC reference + critic gradient transport) must
find the closed-form best action `vgf.envs.bandit.best_action`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgf.agents import AGENTS, config_from_dict, get_agent, make_config
from vgf.data import make_bandit_dataset
from vgf.envs import bandit
from vgf.training import train_chunk

# ----------------------------------------------------------------------------- configs


def test_make_config_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown agent 'sac'.*avgf, bc, fql, iql, rebrac, rejection, vgf"):
        make_config("sac", "paper")
    with pytest.raises(ValueError, match="unknown preset 'huge'.*paper.*cpu-small.*bandit"):
        make_config("vgf", "huge")
    with pytest.raises(ValueError, match="unknown preset 'huge'.*paper.*cpu-small"):
        make_config("bc", "huge")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['num_partciles'\].*num_particles"):
        make_config("vgf", "paper", {"num_partciles": 4})
    with pytest.raises(ValueError, match="unknown config field.*vgf_alpha"):
        make_config("bc", "paper", {"vgf_alpha": 1.0})  # VGF-only field on BC


@pytest.mark.parametrize(
    "agent, overrides, field",
    [
        ("vgf", {"num_particles": 0}, "num_particles"),
        ("vgf", {"train_vgf_steps": -1}, "train_vgf_steps"),
        ("vgf", {"eval_vgf_steps": -2}, "eval_vgf_steps"),
        ("vgf", {"batch_size": 0}, "batch_size"),
        ("vgf", {"bc_flow_steps": 0}, "bc_flow_steps"),
        ("vgf", {"vgf_alpha": 0.0}, "vgf_alpha"),
        ("vgf", {"vgf_lr": -0.1}, "vgf_lr"),
        ("vgf", {"discount": 1.5}, "discount"),
        ("vgf", {"tau": 0.0}, "tau"),
        ("vgf", {"transport_q_agg": "max"}, "transport_q_agg"),
        ("vgf", {"transport_optimizer": "rmsprop"}, "transport_optimizer"),
        ("vgf", {"eval_particle_select": "best"}, "eval_particle_select"),
        ("vgf", {"critic_loss": "huber"}, "critic_loss"),
        ("bc", {"bc_flow_steps": 0}, "bc_flow_steps"),
        ("bc", {"batch_size": -1}, "batch_size"),
    ],
)
def test_make_config_rejects_invalid_values(agent, overrides, field):
    with pytest.raises(ValueError, match=field):
        make_config(agent, "paper", overrides)


def test_every_preset_validates_and_round_trips_through_json():
    for name, module in AGENTS.items():
        assert module.PRESETS, name
        for preset in module.PRESETS:
            config = make_config(name, preset)
            assert config == module.PRESETS[preset]
            restored = config_from_dict(name, json.loads(json.dumps(dataclasses.asdict(config))))
            assert restored == config, (name, preset)


def test_make_config_applies_overrides_and_converts_lists_to_tuples():
    config = make_config("vgf", "cpu-small", {"hidden_dims": [16, 16], "num_particles": 3})
    assert config.hidden_dims == (16, 16) and config.num_particles == 3
    assert make_config("vgf", "cpu-small").num_particles == 8  # the preset itself is untouched
    assert get_agent("bc") is AGENTS["bc"]


# ----------------------------------------------------------------------------- VGF update and act

OBS_DIM, ACTION_DIM = 3, 2
TINY = {
    "hidden_dims": (32, 32),
    "batch_size": 64,
    "num_particles": 4,
    "bc_flow_steps": 3,
    "train_vgf_steps": 2,
    "eval_vgf_steps": 2,
    "discount": 0.9,
    "learning_rate": 1e-3,
}


def create(agent_name: str, config, obs_dim: int, action_dim: int, seed: int = 0):
    """Initialise in one compiled call, as the training loop does (much faster than eager `create` on CPU)."""
    return jax.jit(get_agent(agent_name).create, static_argnums=(0, 1, 2, 3))(config, obs_dim, action_dim, seed)


def tiny_dataset(size=512, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (size, OBS_DIM)).astype(np.float32)
    noise = 0.1 * rng.standard_normal((size, ACTION_DIM))
    actions = np.clip(0.5 * obs[:, :ACTION_DIM] + noise, -1, 1).astype(np.float32)
    rewards = (1.0 - np.sum((actions - 0.3) ** 2, axis=-1)).astype(np.float32)
    next_obs = np.clip(obs + 0.1 * rng.standard_normal(obs.shape), -1, 1).astype(np.float32)
    masks = (rng.uniform(size=size) > 0.1).astype(np.float32)
    return {"observations": obs, "actions": actions, "rewards": rewards, "next_observations": next_obs, "masks": masks}


@pytest.fixture(scope="module")
def tiny_agent():
    return create("vgf", make_config("vgf", "cpu-small", TINY), OBS_DIM, ACTION_DIM, seed=0)


@pytest.fixture(scope="module")
def tiny_data():
    return tiny_dataset()


def batches(data, batch_size, count, seed=0):
    rng = np.random.default_rng(seed)
    size = data["observations"].shape[0]
    for _ in range(count):
        index = rng.integers(0, size, batch_size)
        yield {name: value[index] for name, value in data.items()}


@pytest.fixture(scope="module")
def trained_tiny(tiny_agent, tiny_data):
    """The tiny agent after 300 updates (a Python loop over the jitted `update`), with every update's metrics."""
    agent, history = tiny_agent, []
    for batch in batches(tiny_data, tiny_agent.config.batch_size, 300):
        agent, info = agent.update(batch)
        history.append(info)
    history = {name: np.array([float(info[name]) for info in history]) for name in history[0]}
    return jax.block_until_ready(agent), history


def assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_vgf_update_is_pure_and_jitted(tiny_agent, tiny_data):
    batch = next(batches(tiny_data, tiny_agent.config.batch_size, 1, seed=5))
    # `update` is a jax.jit-compiled method (a jit wrapper has `lower`; a plain function does not).
    assert callable(getattr(type(tiny_agent).update, "lower", None))
    before = jax.tree_util.tree_map(np.asarray, tiny_agent)
    agent1, info1 = tiny_agent.update(batch)
    agent2, info2 = tiny_agent.update(batch)
    assert_trees_equal(agent1, agent2)
    assert_trees_equal(info1, info2)
    assert_trees_equal(tiny_agent, before)  # the input agent is not mutated
    assert set(info1) >= {"critic_loss", "bc_flow_loss", "q_mean", "target_mean", "particle_spread"}
    assert all(np.isfinite(float(v)) for v in info1.values())
    # The update really changes every parameter array and advances the agent's key.
    assert not np.array_equal(np.asarray(agent1.rng), np.asarray(tiny_agent.rng))
    for new, old in ((agent1.critic.params, tiny_agent.critic.params), (agent1.flow.params, tiny_agent.flow.params)):
        for x, y in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old)):
            assert not np.array_equal(np.asarray(x), np.asarray(y))
    # The target critic moves by Polyak averaging tau of the way towards the critic as it was before this update
    # (the reference blends the pre-update weights).
    tau = tiny_agent.config.tau
    for target, online, old in zip(
        jax.tree_util.tree_leaves(agent1.target_critic_params),
        jax.tree_util.tree_leaves(tiny_agent.critic.params),
        jax.tree_util.tree_leaves(tiny_agent.target_critic_params),
    ):
        expected = tau * np.asarray(online) + (1 - tau) * np.asarray(old)
        np.testing.assert_allclose(np.asarray(target), expected, rtol=1e-5, atol=1e-7)


def test_vgf_losses_decrease_on_a_tiny_dataset(trained_tiny):
    _, history = trained_tiny
    first, last = {k: v[:25].mean() for k, v in history.items()}, {k: v[-25:].mean() for k, v in history.items()}
    assert last["critic_loss"] < 0.5 * first["critic_loss"], (first, last)
    assert last["bc_flow_loss"] < 0.9 * first["bc_flow_loss"], (first, last)
    assert all(np.all(np.isfinite(v)) for v in history.values())


# ----------------------------------------------------------------------------- known-answer bandit

# VGF's score at budget 8 depends on the critic's gradient between the data modes and keeps improving with
# training (measured budget-8 reward at seed 0: ~0.79 after 4k updates, ~0.89 after 8k, ~0.94 after 10k,
# ~0.98 after 12k), so 10k updates. BC has plateaued (~0.23) by 4k updates, so it gets 5k.
VGF_UPDATES = 10_000
BC_UPDATES = 5_000
# Chunks of 10 updates and 200 contexts: the same compiled `train_chunk` and `act` as the bandit runs in
# test_training.py (log_every=10, 2 budgets x 100 episodes), so one pytest run compiles them once.
BANDIT_CHUNK = 10
NUM_CONTEXTS = 200
# VGF_BANDIT_SEED lets one re-measure the known-answer numbers at other seeds; the suite uses 0.
BANDIT_SEED = int(os.environ.get("VGF_BANDIT_SEED", "0"))


def train_on_bandit(agent_name: str, seed: int, updates: int):
    config = make_config(agent_name, "bandit")
    agent = create(agent_name, config, bandit.OBS_DIM, bandit.ACTION_DIM, seed)
    data = {name: jnp.asarray(array) for name, array in make_bandit_dataset().arrays().items()}
    for start in range(0, updates, BANDIT_CHUNK):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
        agent, _ = train_chunk(agent, data, key, BANDIT_CHUNK, config.batch_size)
    return jax.block_until_ready(agent)


@pytest.fixture(scope="module")
def bandit_agents():
    """VGF and BC trained with the 'bandit' preset on `make_bandit_dataset()` (shared by the tests below)."""
    return train_on_bandit("vgf", BANDIT_SEED, VGF_UPDATES), train_on_bandit("bc", BANDIT_SEED, BC_UPDATES)


@pytest.fixture(scope="module")
def contexts():
    return np.random.default_rng(1000 + BANDIT_SEED).uniform(-1, 1, size=(NUM_CONTEXTS, 1)).astype(np.float32)


def bandit_scores(contexts, actions) -> tuple[float, float]:
    """Mean true reward and mean distance to the closed-form best action."""
    actions = np.asarray(actions)
    mean_reward = float(bandit.reward(contexts[:, 0], actions).mean())
    distance = float(np.linalg.norm(actions - bandit.best_action(contexts[:, 0]), axis=-1).mean())
    return mean_reward, distance


@pytest.mark.slow
def test_known_answer_bandit_vgf_finds_the_best_in_support_action(bandit_agents, contexts):
    """Known answer: `vgf.envs.bandit.best_action`, the centre of the rare (10%) behavior mode.

    Measured with exactly this setup (reward / distance to the best action), seeds 0, 1, 2:
    VGF budget 8: 0.93/0.13, 0.97/0.08, 0.97/0.08; VGF budget 0 (best of 16 by Q): 0.84, 0.89, 0.86;
    BC: 0.23/0.83, 0.25/0.82, 0.26/0.80. With the transport's sign flipped, or a zero score, this test fails.
    """
    vgf_agent, bc_agent = bandit_agents
    assert vgf_agent.config.eval_vgf_steps == 8  # the default act below is budget 8
    key = jax.random.PRNGKey(BANDIT_SEED)
    vgf_reward, vgf_distance = bandit_scores(contexts, vgf_agent.act(jnp.asarray(contexts), key)[0])
    vgf0_reward, vgf0_distance = bandit_scores(contexts, vgf_agent.act(jnp.asarray(contexts), key, max_steps=0)[0])
    bc_reward, bc_distance = bandit_scores(contexts, bc_agent.act(jnp.asarray(contexts), key)[0])
    summary = dict(vgf8=(vgf_reward, vgf_distance), vgf0=(vgf0_reward, vgf0_distance), bc=(bc_reward, bc_distance))
    print(f"bandit seed {BANDIT_SEED}: {summary}")

    # Cloning the behavior policy mostly plays the frequent, poor modes.
    assert bc_reward < 0.5, summary
    assert bc_distance > 0.5, summary
    # VGF lands on the rare best mode, far better than cloning.
    assert vgf_reward >= 0.85, summary
    assert vgf_distance <= 0.2, summary
    assert vgf_reward - bc_reward >= 0.4, summary
    # The transport itself helps: budget 8 beats best-of-N by Q without transport (budget 0).
    assert vgf_reward > vgf0_reward + 0.03, summary


def test_vgf_act_shapes_box_and_zero_budget(bandit_agents, contexts):
    vgf_agent, _ = bandit_agents
    obs, key = jnp.asarray(contexts), jax.random.PRNGKey(7)
    actions, aux = vgf_agent.act(obs, key)  # default budget: eval_vgf_steps = 8
    assert actions.shape == (NUM_CONTEXTS, bandit.ACTION_DIM)
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)
    assert aux["displacement"].shape == (NUM_CONTEXTS,)
    assert np.mean(np.asarray(aux["displacement"]) > 0) > 0.9
    actions0, aux0 = vgf_agent.act(obs, key, max_steps=0)
    assert actions0.shape == (NUM_CONTEXTS, bandit.ACTION_DIM) and np.all(np.abs(np.asarray(actions0)) <= 1.0)
    np.testing.assert_array_equal(np.asarray(aux0["displacement"]), 0.0)


def test_vgf_act_per_state_budgets_in_one_call(bandit_agents, contexts):
    vgf_agent, _ = bandit_agents
    obs, key = jnp.asarray(contexts), jax.random.PRNGKey(3)
    budgets = np.arange(NUM_CONTEXTS) % 9  # every budget 0..8, mixed in one batch
    mixed, mixed_aux = vgf_agent.act(obs, key, jnp.asarray(budgets), max_steps=8)
    mixed, disp = np.asarray(mixed), np.asarray(mixed_aux["displacement"])
    np.testing.assert_array_equal(disp[budgets == 0], 0.0)
    mean_disp = [disp[budgets == b].mean() for b in (1, 2, 4, 8)]
    assert 0 < mean_disp[0] < mean_disp[1] < mean_disp[2] < mean_disp[3], mean_disp
    # Each state gets what a call giving every state that same budget would have given it.
    for budget in (0, 1, 3, 8):
        uniform, _ = vgf_agent.act(obs, key, jnp.full((NUM_CONTEXTS,), budget, dtype=jnp.int32), max_steps=8)
        rows = budgets == budget
        np.testing.assert_allclose(mixed[rows], np.asarray(uniform)[rows], rtol=1e-5, atol=1e-6)
    # All budgets 0 is plain best-of-N on the reference samples, whatever max_steps is.
    plain, _ = vgf_agent.act(obs, key, max_steps=0)
    np.testing.assert_allclose(mixed[budgets == 0], np.asarray(plain)[budgets == 0], rtol=1e-6, atol=1e-7)


def test_bc_act_ignores_budgets(bandit_agents, contexts):
    _, bc_agent = bandit_agents
    obs, key = jnp.asarray(contexts), jax.random.PRNGKey(0)
    actions, aux = bc_agent.act(obs, key, jnp.asarray(np.arange(NUM_CONTEXTS) % 9), max_steps=8)
    assert actions.shape == (NUM_CONTEXTS, bandit.ACTION_DIM) and np.all(np.abs(np.asarray(actions)) <= 1.0)
    np.testing.assert_array_equal(np.asarray(aux["displacement"]), 0.0)
    np.testing.assert_allclose(np.asarray(actions), np.asarray(bc_agent.act(obs, key)[0]), rtol=1e-6, atol=1e-7)
