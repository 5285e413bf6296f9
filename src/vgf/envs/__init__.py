"""Environments by task name: the contextual bandit and OGBench single-task envs.

>>> spec = task_spec("cube-single-play-singletask-task1")
>>> spec.env_id, spec.obs_dim, spec.action_dim, spec.max_episode_steps
('cube-single-singletask-task1-v0', 28, 5, 200)
>>> env = make_env("bandit")

Nothing here downloads data. OGBench is imported lazily, when an OGBench env is first built.
"""

from __future__ import annotations

from .ogbench_envs import configure_headless_mujoco, silence_known_warnings

# Before anything in vgf imports MuJoCo / dm_control (see ogbench_envs for why and how to override).
configure_headless_mujoco()
silence_known_warnings()

from dataclasses import dataclass  # noqa: E402

import gymnasium  # noqa: E402

from .bandit import ACTION_DIM as _BANDIT_ACTION_DIM  # noqa: E402
from .bandit import OBS_DIM as _BANDIT_OBS_DIM  # noqa: E402
from .bandit import ContextualBanditEnv  # noqa: E402
from .ogbench_envs import clear_env_cache, make_ogbench_env, parse_task, valid_patterns  # noqa: E402

BANDIT_TASK = "bandit"
BANDIT_ENV_ID = "vgf/ContextualBandit-v0"

if BANDIT_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=BANDIT_ENV_ID, entry_point="vgf.envs.bandit:ContextualBanditEnv", max_episode_steps=1)


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task, known without building its environment."""

    task: str  # e.g. 'cube-single-play-singletask-task1' or 'bandit'
    env_id: str  # gymnasium id, e.g. 'cube-single-singletask-task1-v0'
    dataset_name: str  # e.g. 'cube-single-play' ('bandit' for the bandit)
    obs_dim: int
    action_dim: int
    max_episode_steps: int


def task_spec(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of a task name; raises ValueError (listing the valid patterns) for unknown names."""
    if task == BANDIT_TASK:
        return TaskSpec(BANDIT_TASK, BANDIT_ENV_ID, BANDIT_TASK, _BANDIT_OBS_DIM, _BANDIT_ACTION_DIM, 1)
    parsed = parse_task(task)
    return TaskSpec(
        parsed.task, parsed.env_id, parsed.dataset_name, parsed.obs_dim, parsed.action_dim, parsed.max_episode_steps
    )


def make_env(task: str, *, fresh: bool = False) -> gymnasium.Env:
    """Build the environment for a task name.

    'bandit' gives a plain :class:`ContextualBanditEnv` (also registered as ``'vgf/ContextualBandit-v0'``).
    OGBench names ``'{family}-{datatype}-singletask[-task{1..5}]'`` give ``gymnasium.make(env_id)`` with its usual
    wrappers (TimeLimit at the OGBench episode length). Manipulation envs (cube, scene, puzzle) are cheap clones of a
    cached prototype (~5 ms instead of ~1.5 s each; see :mod:`vgf.envs.ogbench_envs`); ``fresh=True`` builds from
    scratch. Each returned env is independent. Never downloads anything.
    """
    if task == BANDIT_TASK:
        return ContextualBanditEnv()
    return make_ogbench_env(parse_task(task), fresh=fresh)


__all__ = [
    "BANDIT_ENV_ID",
    "BANDIT_TASK",
    "ContextualBanditEnv",
    "TaskSpec",
    "clear_env_cache",
    "make_env",
    "task_spec",
    "valid_patterns",
]
