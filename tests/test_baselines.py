"""Tests for the side-by-side agents: iql, rebrac, fql, rejection sampling and amortised VGF (avgf).

Each agent trains once (module fixture, tiny networks, 300 updates in compiled chunks as the training loop runs
them) on a small random dataset with bootstrapping; the tests then check its metrics, losses, acting and
checkpoint round trip. Compilation dominates the run time, so every agent compiles `train_chunk` and `act` once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgf.agents import get_agent, make_config
from vgf.training import load_checkpoint, save_checkpoint, train_chunk

OBS_DIM, ACTION_DIM = 3, 2
NETWORKS = {"hidden_dims": (32, 32), "batch_size": 64, "learning_rate": 1e-3, "discount": 0.9}
PARTICLES = {"num_particles": 4, "bc_flow_steps": 3}
OVERRIDES = {
    "iql": NETWORKS,
    "rebrac": NETWORKS,
    "fql": {**NETWORKS, "bc_flow_steps": 3},
    "rejection": {**NETWORKS, **PARTICLES},
    "avgf": {**NETWORKS, **PARTICLES, "train_vgf_steps": 1, "eval_vgf_steps": 2},
}
# The losses each agent minimises outright (actor losses that trade off Q against BC may rise as Q grows).
DECREASING = {
    "iql": ("critic_loss", "value_loss", "actor_loss"),
    "rebrac": ("critic_loss", "actor_loss"),
    "fql": ("critic_loss", "bc_flow_loss", "actor_loss"),
    "rejection": ("critic_loss", "bc_flow_loss"),
    "avgf": ("critic_loss", "bc_flow_loss", "grad_loss"),
}
CHUNKS, CHUNK_UPDATES = 3, 100


def tiny_dataset(size=512, seed=0) -> dict[str, jax.Array]:
    """Actions near a state-dependent behavior action, a smooth reward, random next states and terminals."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (size, OBS_DIM)).astype(np.float32)
    actions = np.clip(0.5 * obs[:, :ACTION_DIM] + 0.1 * rng.standard_normal((size, ACTION_DIM)), -1, 1)
    rewards = 1.0 - np.sum((actions - 0.3) ** 2, axis=-1)
    next_obs = np.clip(obs + 0.1 * rng.standard_normal(obs.shape), -1, 1)
    masks = (rng.uniform(size=size) > 0.1).astype(np.float32)
    arrays = dict(observations=obs, actions=actions, rewards=rewards, next_observations=next_obs, masks=masks)
    return {name: jnp.asarray(value, dtype=jnp.float32) for name, value in arrays.items()}


def new_agent(name: str, seed: int = 0, **overrides):
    """Eager initialisation: its small compiled ops are shared by all agents (one jitted `create` per agent and
    seed would each compile anew)."""
    config = make_config(name, "cpu-small", {**OVERRIDES[name], **overrides})
    return get_agent(name).create(config, OBS_DIM, ACTION_DIM, seed)


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


def train(agent, data):
    """CHUNKS x CHUNK_UPDATES updates; returns the agent and each metric's mean per chunk."""
    history = []
    for chunk in range(CHUNKS):
        agent, info = train_chunk(agent, data, jax.random.PRNGKey(chunk), CHUNK_UPDATES, agent.config.batch_size)
        history.append(info)
    means = {metric: np.array([float(info[metric]) for info in history]) for metric in history[0]}
    return jax.block_until_ready(agent), means


@pytest.fixture(scope="module")
def trained(data):
    """name -> (trained agent, per-chunk metric means). Compilation dominates, and XLA compiles outside the GIL,
    so two agents train at a time on two threads."""
    agents = {name: new_agent(name) for name in OVERRIDES}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = {name: pool.submit(train, agent, data) for name, agent in agents.items()}
        return {name: result.result() for name, result in results.items()}


@pytest.mark.parametrize("name", list(OVERRIDES))
def test_update_metrics_are_finite_and_losses_decrease(trained, name):
    agent, history = trained[name]
    assert all(np.all(np.isfinite(values)) for values in history.values()), history
    for loss in DECREASING[name]:  # by at least a tenth of the first chunk's magnitude
        first, last = history[loss][0], history[loss][-1]
        assert last < first - 0.1 * abs(first), (name, loss, history[loss])
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(agent))


@pytest.mark.parametrize("name", list(OVERRIDES))
def test_act_returns_actions_in_the_box(trained, data, name):
    agent, _ = trained[name]
    observations = data["observations"][:16]
    budgets = jnp.arange(16) % 3  # ignored by the agents whose USES_BUDGETS is False
    actions, aux = agent.act(observations, jax.random.PRNGKey(3), budgets, max_steps=2)
    assert actions.shape == (16, ACTION_DIM) and aux["displacement"].shape == (16,)
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)
    displacement = np.asarray(aux["displacement"])
    if get_agent(name).USES_BUDGETS:  # particles move only with a budget
        assert np.all(displacement[np.asarray(budgets) == 0] == 0) and np.any(displacement > 0)
    else:
        assert np.all(displacement == 0)


@pytest.mark.parametrize("name", list(OVERRIDES))
def test_checkpoint_round_trip(trained, data, tmp_path, name):
    agent, _ = trained[name]
    path = save_checkpoint(tmp_path, 300, agent)
    # A template of zeros with the agent's structure (a separately created agent holds other optimiser
    # objects, so `act` would compile again for it).
    restored = load_checkpoint(path, jax.tree_util.tree_map(jnp.zeros_like, agent))
    for original, loaded in zip(jax.tree_util.tree_leaves(agent), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(loaded))
    assert restored.config == agent.config
    key, observations, budgets = jax.random.PRNGKey(3), data["observations"][:16], jnp.arange(16) % 3
    np.testing.assert_array_equal(
        np.asarray(restored.act(observations, key, budgets, max_steps=2)[0]),
        np.asarray(agent.act(observations, key, budgets, max_steps=2)[0]),
    )


def test_avgf_gradient_network_tracks_the_critic_gradient(trained, data):
    agent, history = trained["avgf"]
    assert history["grad_loss"][-1] < 0.7 * history["grad_loss"][0], history["grad_loss"]

    @jax.jit
    def true_and_predicted(agent, observations, actions):
        return agent.q_score(observations)(actions), agent.predicted_score(observations, actions)

    true_score, predicted = map(np.asarray, true_and_predicted(agent, data["observations"], data["actions"]))
    norms = np.linalg.norm(true_score, axis=-1) * np.linalg.norm(predicted, axis=-1)
    cosine = np.sum(true_score * predicted, axis=-1) / norms
    assert np.mean(cosine) > 0.7, np.mean(cosine)
    # The tracked scale restores the critic's gradient magnitude (the network regresses a normalised target).
    ratio = np.linalg.norm(predicted, axis=-1).mean() / np.linalg.norm(true_score, axis=-1).mean()
    assert 0.5 < ratio < 2.0, ratio


def test_rebrac_updates_its_actor_every_actor_freq_updates(trained):
    agent, _ = trained["rebrac"]
    assert agent.config.actor_freq == 2
    assert int(agent.critic.step) == CHUNKS * CHUNK_UPDATES and int(agent.actor.step) == CHUNKS * CHUNK_UPDATES // 2


def test_rebrac_critic_penalty_needs_next_actions(data):
    agent = new_agent("rebrac", alpha_critic=0.01)
    with pytest.raises(ValueError, match="next_actions"):
        agent.update({name: value[:8] for name, value in data.items()})


@pytest.mark.parametrize(
    "name, overrides, field",
    [
        ("iql", {"expectile": 1.0}, "expectile"),
        ("iql", {"awr_alpha": -1.0}, "awr_alpha"),
        ("rebrac", {"actor_freq": 0}, "actor_freq"),
        ("rebrac", {"alpha_critic": -0.1}, "alpha_critic"),
        ("fql", {"q_agg": "max"}, "q_agg"),
        ("fql", {"bc_flow_steps": 0}, "bc_flow_steps"),
        ("rejection", {"num_particles": 0}, "num_particles"),
        ("rejection", {"train_particle_select": "best"}, "train_particle_select"),
        ("avgf", {"particle_grad_clip": 0.0}, "particle_grad_clip"),
        ("avgf", {"vgf_alpha": 0.0}, "vgf_alpha"),
    ],
)
def test_invalid_configs_name_the_field(name, overrides, field):
    with pytest.raises(ValueError, match=field):
        make_config(name, "paper", overrides)


def test_only_the_transport_agents_use_budgets():
    expected = {"vgf": True, "avgf": True, "bc": False, "rejection": False, "fql": False, "iql": False, "rebrac": False}
    assert {name: get_agent(name).USES_BUDGETS for name in expected} == expected
