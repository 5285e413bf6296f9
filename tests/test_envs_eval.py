"""Tests for vgf.envs (tasks by name, OGBench env clones) and vgf.evaluation (batched rollouts, plots)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from functools import partial
from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest

from vgf.envs import BANDIT_ENV_ID, ContextualBanditEnv, TaskSpec, make_env, task_spec
from vgf.envs import bandit as bandit_lib
from vgf.envs.ogbench_envs import _FAMILIES, _PRIVATE_MODEL_FIELDS, _PrivateModelFields
from vgf.evaluation import EnvPool, evaluate, evaluate_sequential

CUBE = "cube-single-play-singletask-task1"

# vgf.envs ignores this harmless gymnasium warning process-wide, but pytest resets warning filters for every test.
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered by casting to float32:UserWarning")

# ---------------------------------------------------------------------------------------------------------------------
# Task names
# ---------------------------------------------------------------------------------------------------------------------


def test_cube_single_spec():
    assert task_spec(CUBE) == TaskSpec(
        task=CUBE,
        env_id="cube-single-singletask-task1-v0",
        dataset_name="cube-single-play",
        obs_dim=28,
        action_dim=5,
        max_episode_steps=200,
    )


@pytest.mark.parametrize(
    "task, env_id, dataset, dims",
    [
        ("puzzle-3x3-play-singletask-task2", "puzzle-3x3-singletask-task2-v0", "puzzle-3x3-play", (55, 5, 500)),
        ("puzzle-4x6-noisy-singletask-task5", "puzzle-4x6-singletask-task5-v0", "puzzle-4x6-noisy", (115, 5, 1000)),
        ("scene-play-singletask", "scene-singletask-v0", "scene-play", (40, 5, 750)),
        ("cube-double-play-singletask-task3", "cube-double-singletask-task3-v0", "cube-double-play", (37, 5, 500)),
        ("antmaze-large-navigate-singletask-task4", "antmaze-large-singletask-task4-v0", "antmaze-large-navigate",
         (29, 8, 1000)),
        ("humanoidmaze-giant-stitch-singletask", "humanoidmaze-giant-singletask-v0", "humanoidmaze-giant-stitch",
         (69, 21, 4000)),
        ("pointmaze-medium-navigate-singletask-task1", "pointmaze-medium-singletask-task1-v0",
         "pointmaze-medium-navigate", (2, 2, 1000)),
        ("bandit", BANDIT_ENV_ID, "bandit", (1, 2, 1)),
    ],
)
def test_task_parsing(task, env_id, dataset, dims):
    spec = task_spec(task)
    assert (spec.task, spec.env_id, spec.dataset_name) == (task, env_id, dataset)
    assert (spec.obs_dim, spec.action_dim, spec.max_episode_steps) == dims


def test_version_suffix_is_accepted_and_dropped():
    assert task_spec(CUBE + "-v0") == task_spec(CUBE)


@pytest.mark.parametrize(
    "bad",
    [
        "cube-single-singletask-task1",  # dataset type missing
        "cube-single-play-singletask-task6",  # no such task
        "cube-single-navigate-singletask-task1",  # locomotion dataset type for a manipulation env
        "cube-single-play",  # goal-conditioned dataset name, not a single task
        "visual-cube-single-play-singletask-task1",  # pixels are out of scope
        "cube-octuple-play-singletask-task1",
        "Bandit",
        "",
    ],
)
def test_unknown_task_raises_with_valid_list(bad):
    with pytest.raises(ValueError) as err:
        task_spec(bad)
    message = str(err.value)
    for word in ("bandit", "cube-single", "puzzle-4x6", "antmaze-medium", "play", "navigate", "task{1..5}"):
        assert word in message
    with pytest.raises(ValueError):
        make_env(bad)


def test_table_matches_ogbench_registry():
    import ogbench  # noqa: F401  (registers the ids)

    for family, fam in _FAMILIES.items():
        for suffix in ["", "-task1", "-task2", "-task3", "-task4", "-task5"]:
            spec = task_spec(f"{family}-{fam.datatypes[0]}-singletask{suffix}")
            registered = gymnasium.spec(spec.env_id)
            assert registered.max_episode_steps == spec.max_episode_steps, spec.env_id


@pytest.mark.parametrize(
    "task",
    [
        CUBE,
        "pointmaze-medium-navigate-singletask-task1",
        "antmaze-medium-navigate-singletask-task1",
        "humanoidmaze-medium-navigate-singletask-task1",
        "antsoccer-arena-navigate-singletask-task1",
        "bandit",
    ],
)
def test_spec_dims_match_real_envs(task):
    spec = task_spec(task)
    env = make_env(task)
    ob, _ = env.reset(seed=0)
    assert env.observation_space.shape == (spec.obs_dim,) == np.shape(ob)
    assert env.action_space.shape == (spec.action_dim,)
    ob, *_ = env.step(env.action_space.sample())
    assert np.shape(ob) == (spec.obs_dim,)
    env.close()


def test_bandit_env_and_registration():
    assert isinstance(make_env("bandit"), ContextualBanditEnv)
    assert isinstance(gymnasium.make(BANDIT_ENV_ID).unwrapped, ContextualBanditEnv)


def test_headless_import_is_quiet_and_layered():
    """A fresh interpreter without DISPLAY builds a cube env with no GLFW warning and no upper-layer imports."""
    script = textwrap.dedent(
        f"""
        import sys, os
        import vgf.envs, vgf.evaluation
        assert os.environ["MUJOCO_GL"] == "disable", os.environ["MUJOCO_GL"]
        env = vgf.envs.make_env("{CUBE}")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        bad = [m for m in sys.modules if m.split(".")[:2] in
               (["vgf", "agents"], ["vgf", "training"], ["vgf", "cli"], ["vgf", "data"])]
        assert not bad, bad
        assert "matplotlib" not in sys.modules
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "DISPLAY" not in out.stderr and "GLFW" not in out.stderr, out.stderr
    assert "precision lowered" not in out.stderr, out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Env clones
# ---------------------------------------------------------------------------------------------------------------------


class _ModelUser(gymnasium.Env):
    """Stand-in for an OGBench env: keeps per-episode state in a (shared) model's dof_damping and reads it back."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(1,))
    action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,))

    def __init__(self, model):
        self.model = model

    def reset(self, *, seed=None, options=None):
        self.model.dof_damping[0] = float(seed)
        return np.array([self.model.dof_damping[0]]), {}

    def step(self, action):
        self.model.dof_damping[0] += float(action[0])
        return np.array([self.model.dof_damping[0]]), 0.0, False, False, {}


def test_private_model_fields_isolate_clones():
    import threading

    model = SimpleNamespace(**{name: np.zeros(4) for name in _PRIVATE_MODEL_FIELDS})
    lock = threading.Lock()
    a = _PrivateModelFields(_ModelUser(model), model, lock)
    b = _PrivateModelFields(_ModelUser(model), model, lock)
    assert a.reset(seed=10)[0][0] == 10.0
    assert b.reset(seed=20)[0][0] == 20.0
    assert a.step(np.array([1.0]))[0][0] == 11.0  # without the swap this would read 21
    assert b.step(np.array([-1.0]))[0][0] == 19.0
    assert a.step(np.array([1.0]))[0][0] == 12.0


@pytest.mark.parametrize("task", [CUBE, "puzzle-3x3-play-singletask-task1"])
def test_a_seeded_reset_leaves_the_same_simulation_state(task):
    """OGBench settles the goal scene with random actions on reset; they are the seed's, so the solver's warm start
    (which decides where two runs of one policy part at a contact) and the goal observation are too."""
    clone, fresh = make_env(task), make_env(task, fresh=True)
    clone.reset(seed=4)
    clone.reset(seed=9)
    clone.reset(seed=4)
    fresh.reset(seed=4)
    for name in ("qpos", "qvel", "qacc_warmstart", "ctrl"):
        np.testing.assert_array_equal(getattr(clone.unwrapped._data, name), getattr(fresh.unwrapped._data, name))
    np.testing.assert_array_equal(clone.unwrapped._cur_goal_ob, fresh.unwrapped._cur_goal_ob)
    assert clone.unwrapped.action_space == fresh.action_space


def test_clones_are_cheap_independent_copies():
    a, b = make_env(CUBE), make_env(CUBE)
    assert a.unwrapped is not b.unwrapped
    assert a.unwrapped._data is not b.unwrapped._data
    assert a.unwrapped._model is b.unwrapped._model  # the heavy compiled model is shared
    oa, _ = a.reset(seed=1)
    ob, _ = b.reset(seed=2)
    assert not np.array_equal(oa, ob)
    oa2, _ = a.reset(seed=2)
    np.testing.assert_array_equal(oa2, ob)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


def _bandit_policy(obs, budgets, *_rows):
    """Deterministic, row-independent: action moves towards the best action as the budget grows."""
    target = bandit_lib.best_action(obs[:, 0]).astype(np.float32)
    frac = np.minimum(budgets, 4).astype(np.float32) / 4.0
    actions = frac[:, None] * target + (1.0 - frac[:, None]) * np.array([0.6, -0.6], dtype=np.float32)
    displacement = np.abs(actions[:, 0] - 0.6) + np.abs(actions[:, 1] + 0.6)
    return actions, {"displacement": displacement, "frac": frac}


def test_bandit_batched_equals_sequential():
    env_fn = partial(make_env, "bandit")
    batched = evaluate(env_fn, _bandit_policy, [0, 1, 2, 4], episodes=64, seed=3)
    sequential = evaluate_sequential(env_fn, _bandit_policy, [0, 1, 2, 4], episodes=64, seed=3)
    assert batched == sequential
    assert set(batched) == {0, 1, 2, 4}
    for stats in batched.values():
        assert set(stats) >= {"success", "success_std", "return", "return_std", "length", "episodes",
                              "displacement", "frac"}
        assert stats["episodes"] == 64 and stats["length"] == 1.0


def test_budgets_get_their_own_actions():
    seen = []

    def policy(obs, budgets, episodes, steps):
        seen.append((budgets.copy(), episodes.copy(), steps.copy()))
        return _bandit_policy(obs, budgets)

    res = evaluate(partial(make_env, "bandit"), policy, [0, 2, 4], episodes=50, seed=0)
    budgets, episodes, steps = seen[0]
    np.testing.assert_array_equal(budgets, np.repeat(np.array([0, 2, 4], dtype=np.int32), 50))
    np.testing.assert_array_equal(episodes, np.tile(np.arange(50), 3))  # budgets share each episode's index
    np.testing.assert_array_equal(steps, np.zeros(150))
    assert budgets.dtype == episodes.dtype == steps.dtype == np.int32
    returns = [res[b]["return"] for b in (0, 2, 4)]
    assert returns[0] < returns[1] < returns[2]
    assert res[4]["success"] == 1.0 and res[0]["success"] < 0.5
    assert res[0]["frac"] == 0.0 and res[2]["frac"] == 0.5 and res[4]["frac"] == 1.0


def test_common_random_numbers_across_budgets():
    first_obs = []

    def policy(obs, budgets, *_rows):
        first_obs.append(obs.copy())
        return _bandit_policy(obs, budgets)

    evaluate(partial(make_env, "bandit"), policy, [0, 1, 5], episodes=8, seed=11)
    rows = first_obs[0].reshape(3, 8, -1)
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[0], rows[2])
    assert len(np.unique(rows[0][:, 0])) == 8  # different episodes, different contexts
    expected = [ContextualBanditEnv().reset(seed=11 + i)[0] for i in range(8)]
    np.testing.assert_array_equal(rows[0], np.stack(expected))


def _cube_policy(obs, budgets, *_rows):
    """Deterministic and row-independent (elementwise only), budget-dependent."""
    scale = 1.0 + 0.5 * budgets.astype(np.float32)
    actions = np.tanh(scale[:, None] * (obs[:, 19:24] - obs[:, :5]))
    return actions, {"displacement": actions[:, 0] ** 2 + actions[:, 1] ** 2, "budget": budgets.astype(np.float32)}


def test_cube_batched_equals_sequential_on_fresh_env():
    """Batched evaluation on cached-prototype clones equals the plain loop on a from-scratch OGBench env."""
    with EnvPool(partial(make_env, CUBE)) as pool:
        batched = evaluate(None, _cube_policy, [0, 3], episodes=3, seed=5, max_episode_steps=12, envs=pool)
        again = evaluate(None, _cube_policy, [0, 3], episodes=3, seed=5, max_episode_steps=12, envs=pool)
        assert len(pool) == 6
    sequential = evaluate_sequential(
        partial(make_env, CUBE, fresh=True), _cube_policy, [0, 3], episodes=3, seed=5, max_episode_steps=12
    )
    assert batched == sequential == again
    assert batched[0]["length"] == 12.0 and batched[3]["length"] == 12.0
    assert batched[0]["return"] != batched[3]["return"] or batched[0]["displacement"] != batched[3]["displacement"]
    assert batched[3]["budget"] == 3.0


class _CountdownEnv(gymnasium.Env):
    """Episode length 1 + seed % 4; reward 1 per step; fails loudly if stepped after its episode ended."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self, with_success: bool = False):
        self.with_success = with_success
        self.t, self.horizon, self.done = 0, 0, True

    def reset(self, *, seed=None, options=None):
        self.t, self.horizon, self.done = 0, 1 + seed % 4, False
        return np.array([0.0, seed], dtype=np.float32), {}

    def step(self, action):
        assert not self.done, "stepped after the episode ended"
        self.t += 1
        self.done = self.t >= self.horizon
        info = {"success": float(self.t % 2 == 0)} if self.with_success else {}
        return np.array([self.t, self.horizon], dtype=np.float32), 1.0, self.done, False, info


def test_one_policy_call_per_step_for_the_episodes_still_running():
    shapes, rows = [], []

    def policy(obs, budgets, episodes, steps):
        shapes.append(obs.shape)
        rows.append((episodes.tolist(), steps.tolist()))
        # aux: 1 for the first budget's rows, 3 for the second's, so that per-step weighting is visible below
        return np.zeros((len(obs), 1), np.float32), {"aux": np.where(budgets == 0, 1.0, 3.0) * (1 + obs[:, 0])}

    res = evaluate(_CountdownEnv, policy, [0, 7], episodes=5, seed=0)
    # seeds 0..4 give lengths 1, 2, 3, 4, 1: the longest episode takes 4 steps -> exactly 4 calls, on the episodes
    # that have not ended (both budgets' rows of episodes 0-4, then 1-3, 2-3, 3)
    assert shapes == [(10, 2), (6, 2), (4, 2), (2, 2)]
    assert rows[1] == ([1, 2, 3, 1, 2, 3], [1] * 6) and rows[3] == ([3, 3], [3, 3])
    assert res[0]["length"] == res[7]["length"] == pytest.approx(11 / 5)
    assert res[0]["return"] == pytest.approx(11 / 5) and "success" not in res[0]  # no env reported success: omitted
    # aux on step t (t = 0, 1, ...) of an episode is (1 + t) for budget 0: steps weighted equally over 11 steps
    per_episode = [sum(1 + t for t in range(n)) for n in (1, 2, 3, 4, 1)]
    assert res[0]["aux"] == pytest.approx(sum(per_episode) / 11)
    assert res[7]["aux"] == pytest.approx(3 * sum(per_episode) / 11)
    assert res == evaluate_sequential(_CountdownEnv, policy, [0, 7], episodes=5, seed=0)


def test_a_discount_adds_the_discounted_return_and_each_aux_at_the_first_step():
    def policy(obs, budgets, *_rows):  # aux at step t: (1 + t) for budget 0, 3 (1 + t) for budget 7
        return np.zeros((len(obs), 1), np.float32), {"q": np.where(budgets == 0, 1.0, 3.0) * (1 + obs[:, 0])}

    res = evaluate(_CountdownEnv, policy, [0, 7], episodes=5, seed=0, discount=0.5)
    # lengths 1, 2, 3, 4, 1 with reward 1 per step: sum_t 0.5^t = 1, 1.5, 1.75, 1.875, 1
    assert res[0]["discounted_return"] == res[7]["discounted_return"] == pytest.approx(7.125 / 5)
    assert (res[0]["q_start"], res[7]["q_start"]) == (1.0, 3.0)
    assert res[0]["q"] == pytest.approx(sum(sum(1 + t for t in range(n)) for n in (1, 2, 3, 4, 1)) / 11)
    assert res == evaluate_sequential(_CountdownEnv, policy, [0, 7], episodes=5, seed=0, discount=0.5)
    assert "discounted_return" not in evaluate(_CountdownEnv, policy, [0], episodes=2)[0]


def test_per_episode_values_in_episode_order_for_each_budget():
    def policy(obs, budgets, *_rows):
        return np.zeros((len(obs), 1), np.float32), {"q": np.where(budgets == 0, 1.0, 3.0) * (1 + obs[:, 0])}

    env_fn = partial(_CountdownEnv, with_success=True)
    res = evaluate(env_fn, policy, [0, 7], episodes=5, seed=0, discount=0.5, per_episode=True)
    for budget, first_q in ((0, 1.0), (7, 3.0)):  # lengths 1, 2, 3, 4, 1: success iff the length is even
        assert res[budget]["per_episode"] == {
            "success": [0.0, 1.0, 0.0, 1.0, 0.0], "return": [1.0, 2.0, 3.0, 4.0, 1.0], "length": [1, 2, 3, 4, 1],
            "discounted_return": [1.0, 1.5, 1.75, 1.875, 1.0], "q_start": [first_q] * 5}
        assert res[budget]["success"] == np.mean(res[budget]["per_episode"]["success"])
    assert res == evaluate_sequential(env_fn, policy, [0, 7], episodes=5, seed=0, discount=0.5, per_episode=True)
    with EnvPool(env_fn, workers=2) as pool:
        assert res == evaluate(env_fn, policy, [0, 7], episodes=5, seed=0, discount=0.5, per_episode=True, envs=pool)
    plain = evaluate(_CountdownEnv, policy, [0], episodes=2, per_episode=True)[0]["per_episode"]
    assert set(plain) == {"return", "length"}  # no success reported, no discount: neither has a column
    assert "per_episode" not in evaluate(env_fn, policy, [0], episodes=2)[0]


def test_final_success_and_step_cap():
    def policy(obs, budgets, *_rows):
        return np.zeros((len(obs), 1), np.float32), {}

    env_fn = partial(_CountdownEnv, with_success=True)
    res = evaluate(env_fn, policy, [1], episodes=4, seed=0)  # lengths 1..4: final success iff length is even
    assert res[1]["success"] == 0.5 and res[1]["success_std"] == 0.5
    capped = evaluate(env_fn, policy, [1], episodes=4, seed=0, max_episode_steps=2)
    assert capped[1]["length"] == pytest.approx((1 + 2 + 2 + 2) / 4)
    assert capped[1]["success"] == 0.75  # final step of the capped episodes is step 2 -> success
    assert capped == evaluate_sequential(env_fn, policy, [1], episodes=4, seed=0, max_episode_steps=2)


def test_worker_processes_give_identical_results():
    def policy(obs, budgets, *_rows):
        return np.zeros((len(obs), 1), np.float32), {"aux": budgets * (1.0 + obs[:, 0])}

    env_fn = partial(_CountdownEnv, with_success=True)
    local = evaluate(env_fn, policy, [0, 2, 5], episodes=7, seed=1, max_episode_steps=3)
    with EnvPool(env_fn, workers=2) as pool:
        remote = evaluate(None, policy, [0, 2, 5], episodes=7, seed=1, max_episode_steps=3, envs=pool)
        assert len(pool) == 22  # 21 rows over 2 workers: 11 envs each
        again = evaluate(None, policy, [0, 2], episodes=4, seed=1, envs=pool)  # fewer rows than envs: reuse
        with pytest.raises(RuntimeError):
            pool.get(1)
        # a failure inside a worker surfaces here with its traceback (stepping a finished env is such a failure)
        backend = pool._backend(1)
        backend.reset([0])
        obs = np.zeros((1, 2), np.float32)
        backend.submit(np.array([0]), np.zeros((1, 1), np.float32))
        backend.collect(obs)
        backend.submit(np.array([0]), np.zeros((1, 1), np.float32))
        with pytest.raises(RuntimeError, match="stepped after the episode ended"):
            backend.collect(obs)
    assert remote == local
    assert again == evaluate(env_fn, policy, [0, 2], episodes=4, seed=1)


_PARENT_MARK = None  # set in the test process only: a forked worker would inherit it, a fresh one starts without


class _InheritanceProbeEnv(_CountdownEnv):
    """Its reset observation is [1, seed] in a process that inherited the test process's memory, else [0, seed]."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        obs[0] = float(_PARENT_MARK is not None)
        return obs, info


def test_env_workers_start_fresh_not_as_forks_of_a_process_that_runs_jax(monkeypatch):
    import jax

    jax.devices()  # this process has initialised JAX, as `vgf train` has when it starts its env workers
    monkeypatch.setattr(sys.modules[__name__], "_PARENT_MARK", os.getpid())
    with EnvPool(_InheritanceProbeEnv, workers=1) as pool:
        assert pool._backend(1).reset([5]).tolist() == [[0.0, 5.0]]
    with pytest.raises(ValueError, match="forked worker would inherit this process's JAX"):
        EnvPool(_InheritanceProbeEnv, workers=1, start_method="fork")


@pytest.fixture(scope="module")
def small_vgf_agent():
    """An untrained small VGF agent with cube-single's dimensions (its policies compile once per module)."""
    from vgf.agents import get_agent, make_config

    config = make_config("vgf", "cpu-small", {"hidden_dims": (32, 32)})
    return get_agent("vgf").create(config, 28, 5, seed=0)


def test_agent_policy_rows_do_not_depend_on_their_batch(small_vgf_agent):
    """Each row's action is a function of its own observation, budget, episode and step: the same in any batch."""
    from vgf.training import make_policy

    policy = make_policy(small_vgf_agent, seed=3, budgets=(0, 1, 2))
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((11, 28)).astype(np.float32)
    budgets = np.array([0, 1, 2, 2] * 2 + [2, 1, 0], np.int32)
    episodes = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2], np.int32)
    steps = np.array([0, 1, 2, 3, 0, 1, 2, 3, 7, 7, 7], np.int32)
    full, aux = policy(obs, budgets, episodes, steps)
    order = rng.permutation(11)
    shuffled, _ = policy(obs[order], budgets[order], episodes[order], steps[order])
    np.testing.assert_array_equal(shuffled, full[order])
    for row in range(11):
        alone, alone_aux = policy(obs[row : row + 1], budgets[row : row + 1], episodes[row : row + 1], steps[row : row + 1])
        np.testing.assert_array_equal(alone[0], full[row])
        assert alone_aux["displacement"][0] == aux["displacement"][row]
    # the keys are per episode and step: another episode (or step) of the same observation acts differently
    again, _ = policy(obs[:1], budgets[:1], episodes[:1] + 1, steps[:1])
    assert not np.array_equal(again[0], full[0])
    with pytest.raises(ValueError, match="budgets \\[3\\]"):
        policy(obs[:1], np.array([3], np.int32), episodes[:1], steps[:1])


def test_agent_evaluation_with_workers_equals_the_serial_loop(small_vgf_agent):
    """An agent evaluated by two env workers, policy and physics overlapped, plays what the serial loops play."""
    from vgf.training import make_policy

    agent = small_vgf_agent
    args = dict(budgets=[0, 1, 2], episodes=3, seed=2, max_episode_steps=6)
    with EnvPool(partial(make_env, CUBE), workers=2) as pool:
        pooled = evaluate(None, make_policy(agent, 2, (0, 1, 2)), envs=pool, **args)
    serial = evaluate(partial(make_env, CUBE), make_policy(agent, 2, (0, 1, 2)), **args)
    sequential = evaluate_sequential(partial(make_env, CUBE), make_policy(agent, 2, (0, 1, 2)), **args)
    assert pooled == serial == sequential
    assert len({stats["displacement"] for stats in pooled.values()}) == 3  # the budgets really act differently


def test_env_workers_are_sized_to_the_machine(monkeypatch):
    from vgf.evaluation import env_workers

    monkeypatch.delenv("VGF_ENV_WORKERS", raising=False)
    assert env_workers(None, 200) == len(os.sched_getaffinity(0))
    assert env_workers(3, 200) == 3 and env_workers(0, 200) == 0
    assert env_workers(None, 1) == 0  # one-step episodes (the bandit): nothing to overlap
    monkeypatch.setenv("VGF_ENV_WORKERS", "1")  # e.g. set by `vgf bench` for each of its concurrent runs
    assert env_workers(None, 200) == 1
    with pytest.raises(ValueError):
        env_workers(-1, 200)


@pytest.mark.parametrize(
    "kwargs",
    [dict(budgets=[], episodes=1), dict(budgets=[1, 1], episodes=1), dict(budgets=[1], episodes=0),
     dict(budgets=[-1], episodes=1), dict(budgets=[1], episodes=1, max_episode_steps=0)],
)
def test_evaluate_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        evaluate(_CountdownEnv, lambda o, *_rows: (np.zeros((len(o), 1)), {}), **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 2000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path):
    from vgf.evaluation.plots import plot_budget_curve, plot_learning_curve  # here: keeps worker start-up light

    res = evaluate(partial(make_env, "bandit"), _bandit_policy, [0, 1, 2, 4, 8, 16], episodes=20)
    with_disp = plot_budget_curve(res, tmp_path / "nested" / "budget.png", title="bandit")
    assert with_disp == tmp_path / "nested" / "budget.png" and _is_png(with_disp)
    bare = {b: {"success": v["success"], "return": v["return"]} for b, v in res.items()}
    without_disp = plot_budget_curve(bare, tmp_path / "bare.png")
    assert _is_png(without_disp)
    assert with_disp.stat().st_size != without_disp.stat().st_size  # the displacement panel is there

    rows = []
    for step in range(0, 5000, 1000):
        rows.append({"step": step, "train/loss": 1.0 / (step + 1)})
        scale = 1 + step / 5000
        rows.append({"step": step, **{f"eval/budget_{b}/{k}": v * scale for b in res for k, v in res[b].items()}})
    curve = plot_learning_curve(rows, tmp_path / "curve.png", title="lc", marker_step=2000)
    assert _is_png(curve)
    subset = plot_learning_curve(rows, tmp_path / "subset.png", budget_keys=["budget_0", "4", 16])
    assert _is_png(subset)
    with pytest.raises(ValueError):
        plot_budget_curve({}, tmp_path / "empty.png")


def test_budget_heatmap_over_updates_and_budgets(tmp_path):
    from vgf.evaluation import budget_grid, plot_budget_heatmap

    records = {20000: {"results": {"0": {"normalized_score": 30.0}, "3": {"normalized_score": 35.0}}},
               10000: {"results": {"0": {"normalized_score": 10.0}}}}
    steps, budgets, values = budget_grid(records, "normalized_score")
    assert (steps, budgets) == ([10000, 20000], [0, 3])
    np.testing.assert_array_equal(values, [[10.0, np.nan], [30.0, 35.0]])  # a budget not evaluated at a step: NaN
    path = plot_budget_heatmap(records, tmp_path / "heat.png", title="hopper")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
