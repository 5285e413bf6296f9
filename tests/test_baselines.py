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

from vgf.agents import (
    config_from_dict,
    get_agent,
    make_config,
    needs_next_actions,
    scales_rewards,
    task_dataset,
    task_values,
)
from vgf.data import Dataset
from vgf.data.locomotion import LOCOMOTION_ENVS
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
    # aux['q']: the critic's value of the played action, the ensemble's min or mean as the agent aggregates it
    members = np.asarray(agent.critic.apply_fn(agent.critic.params, observations, actions))
    q = np.asarray(aux["q"])
    aggregate = members.min(0) if name in ("iql", "rebrac") else members.mean(0)
    np.testing.assert_allclose(q, aggregate, rtol=1e-5, atol=1e-5)


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


def test_rebrac_steps_its_actor_adam_on_every_update(trained):
    """As the FQL repo's one Adam over all networks: the actor's Adam counts every update, critic-only ones too."""
    agent, _ = trained["rebrac"]
    assert agent.config.actor_freq == 2 and agent.config.actor_adam_every_update
    assert int(agent.critic.step) == int(agent.actor.step) == CHUNKS * CHUNK_UPDATES


def total_change(before, after) -> float:
    return sum(float(jnp.abs(a - b).sum()) for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)))


@pytest.mark.parametrize("adam_every_update", [True, False])
def test_rebrac_delayed_actor_update(data, adam_every_update):
    """Update 1 is critic-only, 2 an actor update, 3 critic-only again. The target actor moves on actor updates only;
    between them the actor keeps moving by Adam's momentum (the FQL repo) or stands still (vgf before)."""
    agent = new_agent("rebrac", actor_adam_every_update=adam_every_update)
    batch = {name: value[:64] for name, value in data.items()}
    actor_moves, target_moves = [], []
    for _ in range(3):
        updated, _ = agent.update(batch)
        actor_moves.append(total_change(agent.actor.params, updated.actor.params))
        target_moves.append(total_change(agent.target_actor_params, updated.target_actor_params))
        agent = updated
    assert actor_moves[0] == 0.0 and target_moves[0] == 0.0  # no gradient yet, so no momentum either
    assert actor_moves[1] > 0.0 and target_moves[1] > 0.0
    assert target_moves[2] == 0.0
    assert (actor_moves[2] > 0.1 * actor_moves[1]) if adam_every_update else (actor_moves[2] == 0.0)
    assert int(agent.actor.step) == (3 if adam_every_update else 1)


def test_rebrac_critic_penalty_needs_next_actions(data):
    agent = new_agent("rebrac", alpha_critic=0.01)
    with pytest.raises(ValueError, match="next_actions"):
        agent.update({name: value[:8] for name, value in data.items()})


def test_rebrac_critic_penalty_lowers_the_target_by_the_next_action_distance(data):
    """With next actions far from the target actor's, the penalised TD target is lower by about alpha_critic times
    their squared distance (discounted, on bootstrapped transitions)."""
    batch = {name: value[:64] for name, value in data.items()}
    batch["next_actions"] = jnp.ones_like(batch["actions"])  # the box corner, far from the near-zero initial actor
    key = jax.random.PRNGKey(0)
    plain = new_agent("rebrac")
    penalised = new_agent("rebrac", alpha_critic=0.5)
    _, plain_info = plain.critic_loss_fn(plain.critic.params, batch, key)
    _, penalised_info = penalised.critic_loss_fn(penalised.critic.params, batch, key)
    gap = float(plain_info["target_mean"] - penalised_info["target_mean"])
    # Initial actions are within ~0.5 of zero after target smoothing, so each squared distance is between 0.5 and 8.
    bootstrapped = float(jnp.mean(batch["masks"]))
    assert 0.5 * NETWORKS["discount"] * bootstrapped * 0.5 < gap < 0.5 * NETWORKS["discount"] * 8.0
    assert needs_next_actions("rebrac", penalised.config) and not needs_next_actions("rebrac", plain.config)
    assert not needs_next_actions("fql", make_config("fql", "paper"))


def test_dataset_next_actions_stay_within_each_trajectory():
    actions = np.arange(12, dtype=np.float32).reshape(6, 2)
    terminals = np.array([0, 0, 1, 0, 1, 0], dtype=np.float32)  # trajectories: rows 0-2, 3-4, and 5 (cut short)
    dataset = Dataset.from_arrays(
        dict(observations=np.zeros((6, 1)), actions=actions / 100, rewards=np.zeros(6), next_observations=np.zeros((6, 1)),
             terminals=terminals)
    )
    expected = dataset.actions[[1, 2, 2, 4, 4, 5]]  # the next row's action; a trajectory's last row keeps its own
    np.testing.assert_array_equal(dataset.next_actions(), expected)


# ----- activation, configs written before it, per-environment presets -----

BASELINES = ("fql", "iql", "rebrac", "bc")


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_default_to_gelu_and_build_their_networks_with_it(name):
    config = make_config(name, "paper")
    assert config.activation == "gelu"
    relu = get_agent(name).create(make_config(name, "cpu-small", {"hidden_dims": (8,), "activation": "relu"}), 3, 2)
    gelu = get_agent(name).create(make_config(name, "cpu-small", {"hidden_dims": (8,)}), 3, 2)
    obs = jnp.linspace(-1, 1, 12).reshape(4, 3)
    # Same parameters (same seed), different activation: every network's output differs.
    networks = [field for field in ("critic", "value", "actor", "flow", "one_step") if hasattr(gelu, field)]
    assert networks
    for field in networks:
        state_relu, state_gelu = getattr(relu, field), getattr(gelu, field)
        for a, b in zip(jax.tree_util.tree_leaves(state_relu.params), jax.tree_util.tree_leaves(state_gelu.params)):
            np.testing.assert_array_equal(a, b)
        args = {
            "critic": (obs, obs[:, :2]),
            "value": (obs,),
            "actor": (obs,),
            "flow": (obs, obs[:, :2], obs[:, :1]),
            "one_step": (jnp.concatenate([obs, obs[:, :2]], axis=-1),),
        }[field]
        out_relu = state_relu.apply_fn(state_relu.params, *args)
        out_gelu = state_gelu.apply_fn(state_gelu.params, *args)
        assert not np.allclose(out_relu, out_gelu), field


@pytest.mark.parametrize("name", BASELINES)
def test_a_config_written_before_the_activation_field_comes_back_relu(name):
    values = {key: list(value) if isinstance(value, tuple) else value for key, value in vars(make_config(name, "paper")).items()}
    del values["activation"]
    values.pop("actor_adam_every_update", None)
    old = config_from_dict(name, values)
    assert old.activation == "relu"
    if name == "rebrac":
        assert old.actor_adam_every_update is False
    assert config_from_dict(name, {**values, "activation": "gelu"}).activation == "gelu"  # written values are kept


def test_per_environment_values_of_the_fql_paper():
    def config(agent, task, preset="paper", overrides=None):
        return make_config(agent, preset, overrides, task=task)

    puzzle = "puzzle-3x3-play-singletask-task2"
    assert config("fql", puzzle).alpha == config("fql", puzzle, "cpu-small").alpha == 1000.0
    assert config("fql", "puzzle-4x4-play-singletask").alpha == 1000.0
    assert config("fql", "cube-double-play-singletask-task1").alpha == 300.0
    assert config("fql", "scene-play-singletask-task3", "cpu-small").alpha == 300.0
    assert config("fql", "cube-single-play-singletask-task1", "paper-puzzle").alpha == 1000.0  # a fixed preset
    humanoid = config("fql", "humanoidmaze-medium-navigate-singletask")
    assert (humanoid.alpha, humanoid.discount) == (30.0, 0.995)
    iql_humanoid = config("iql", "humanoidmaze-medium-navigate-singletask-task2", "cpu-small")
    assert (iql_humanoid.awr_alpha, iql_humanoid.discount, iql_humanoid.hidden_dims) == (10.0, 0.995, (256, 256, 256))
    rebrac = config("rebrac", "cube-single-play-singletask-task1", "cpu-small")
    assert (rebrac.alpha_actor, rebrac.alpha_critic, rebrac.hidden_dims) == (1.0, 1.0, (256, 256, 256))
    assert config("iql", puzzle, "cpu-small").awr_alpha == config("iql", "scene-play-singletask-task1").awr_alpha == 10.0
    # A dataset whose values are not sourced keeps the preset's.
    assert config("iql", "cube-double-play-singletask-task1", "cpu-small") == make_config("iql", "cpu-small")
    # The user's overrides win over the environment's values.
    assert config("rebrac", "cube-single-play-singletask-task1", "paper", {"alpha_critic": 0.0}).alpha_critic == 0.0
    # Tasks without values (another dataset, the bandit, D4RL AntMaze) and the bandit preset keep the preset's own.
    assert config("fql", "cube-single-noisy-singletask-task1") == make_config("fql", "paper")
    assert config("iql", "d4rl:antmaze-umaze-v2") == make_config("iql", "paper")
    assert config("fql", puzzle, "bandit") == make_config("fql", "bandit")
    assert task_values("bc", "paper", puzzle) == {}


@pytest.mark.parametrize("name", ("fql", "iql", "rebrac"))
def test_every_environment_value_names_a_dataset_and_validates(name):
    module = get_agent(name)
    for dataset, values in module.TASK_VALUES.items():
        # an OGBench or D4RL locomotion dataset vgf knows
        task = f"d4rl:{dataset}-v5" if dataset.split("-")[0] in LOCOMOTION_ENVS else f"{dataset}-singletask-task1"
        assert task_dataset(task) == dataset, dataset
        for preset in module.TASK_PRESETS:
            config = make_config(name, preset, task=task)
            assert all(getattr(config, field) == value for field, value in values.items()), (dataset, preset)


@pytest.mark.parametrize(
    "name, overrides, field",
    [
        ("iql", {"expectile": 1.0}, "expectile"),
        ("iql", {"awr_alpha": -1.0}, "awr_alpha"),
        ("rebrac", {"actor_freq": 0}, "actor_freq"),
        ("rebrac", {"alpha_critic": -0.1}, "alpha_critic"),
        ("rebrac", {"activation": "tanh"}, "activation='tanh'"),
        ("iql", {"activation": "swish"}, "activation='swish'"),
        ("fql", {"activation": "GELU"}, "activation='GELU'"),
        ("bc", {"activation": "elu"}, "activation='elu'"),
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


def test_d4rl_locomotion_values_of_the_reference_papers():
    def config(agent, task, preset="cpu-small"):
        return make_config(agent, preset, task=task)

    iql = config("iql", "d4rl:walker2d-medium-v5")  # IQL's configs/mujoco_config.py
    assert (iql.expectile, iql.awr_alpha, iql.hidden_dims, iql.critic_layer_norm) == (0.7, 3.0, (256, 256), False)
    assert config("iql", "d4rl:walker2d-medium-v2", "paper") == iql  # D4RL's own files and ours: the same values
    rebrac = config("rebrac", "d4rl:hopper-medium-replay-v5", "paper")  # ReBRAC's per-dataset configs
    assert (rebrac.alpha_actor, rebrac.alpha_critic, rebrac.batch_size, rebrac.learning_rate) == (0.05, 0.5, 1024, 1e-3)
    assert (config("rebrac", "d4rl:halfcheetah-medium-v5").alpha_actor,
            config("rebrac", "d4rl:halfcheetah-medium-v5").alpha_critic) == (0.001, 0.01)
    assert config("rebrac", "d4rl:hopper-random-v5") == make_config("rebrac", "cpu-small")  # no published values
    fql = config("fql", "d4rl:hopper-medium-v5")
    assert (fql.alpha, fql.normalize_q_loss) == (10.0, True)
    # VGF: paper is paper-d4rl there, and cpu-small its CPU version
    assert config("vgf", "d4rl:hopper-medium-v5", "paper") == make_config("vgf", "paper-d4rl")
    assert config("vgf", "d4rl:hopper-medium-v5") == make_config("vgf", "cpu-d4rl")
    cpu = make_config("vgf", "cpu-d4rl")
    assert (cpu.target_q_agg, cpu.select_q_agg, cpu.transport_q_agg, cpu.vgf_lr, cpu.vgf_alpha) == ("min", "min", "mean",
                                                                                                   0.1, 0.1)
    assert config("vgf", "d4rl:antmaze-umaze-v2") == make_config("vgf", "cpu-small")
    # Rewards scaled by 1000 / (max - min episode return) where the reference code does it: VGF's and IQL's
    assert [scales_rewards(agent, "d4rl:hopper-medium-v5") for agent in ("vgf", "iql", "rebrac", "fql", "bc")] == [
        True, True, False, False, False]
    assert not scales_rewards("vgf", "d4rl:antmaze-umaze-v2") and not scales_rewards("vgf", "puzzle-3x3-play-singletask")
