"""Environments by task name: the contextual bandit, OGBench single-task envs, D4RL and Minari tasks.

>>> spec = task_spec("cube-single-play-singletask-task1")
>>> spec.env_id, spec.obs_dim, spec.action_dim, spec.max_episode_steps
('cube-single-singletask-task1-v0', 28, 5, 200)
>>> spec = task_spec("d4rl:hopper-medium-v2")
>>> spec.env_id, spec.obs_dim, spec.action_dim, spec.d4rl_reference
('Hopper-v5', 11, 3, 'hopper-medium-v2')
>>> env = make_env("bandit")

'd4rl:<D4RL dataset name>' tasks train on '<data dir>/<name>.hdf5' and are evaluated in Gymnasium's MuJoCo envs
(see :mod:`vgf.envs.d4rl_envs` for how those differ from D4RL's); 'minari:<dataset id>' tasks train on a dataset in
Minari's local directory and are evaluated in the env Minari recorded for it (:mod:`vgf.envs.minari_envs`).
Nothing here downloads data. OGBench is imported lazily, when an OGBench env is first built.
"""

from __future__ import annotations

from .ogbench_envs import configure_headless_mujoco, silence_known_warnings

# Before anything in vgf imports MuJoCo / dm_control (see ogbench_envs for why and how to override).
configure_headless_mujoco()
silence_known_warnings()

import contextlib  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gymnasium  # noqa: E402

from .bandit import ACTION_DIM as _BANDIT_ACTION_DIM  # noqa: E402
from .bandit import OBS_DIM as _BANDIT_OBS_DIM  # noqa: E402
from .bandit import ContextualBanditEnv  # noqa: E402
from .d4rl_envs import D4RL_PREFIX, make_d4rl_env, parse_d4rl_task  # noqa: E402
from .minari_envs import MINARI_PREFIX, make_minari_env, minari_datasets_root, parse_minari_task  # noqa: E402
from .ogbench_envs import clear_env_cache, make_ogbench_env, parse_task, valid_patterns  # noqa: E402

BANDIT_TASK = "bandit"
BANDIT_ENV_ID = "vgf/ContextualBandit-v0"

if BANDIT_ENV_ID not in gymnasium.registry:
    gymnasium.register(id=BANDIT_ENV_ID, entry_point="vgf.envs.bandit:ContextualBanditEnv", max_episode_steps=1)


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task: from its name alone, or for a Minari task from its local dataset's metadata."""

    task: str  # e.g. 'cube-single-play-singletask-task1', 'bandit', 'd4rl:hopper-medium-v2', 'minari:<dataset id>'
    env_id: str | None  # gymnasium id, e.g. 'cube-single-singletask-task1-v0'; None where no env exists (D4RL AntMaze)
    dataset_name: str  # e.g. 'cube-single-play' ('bandit' for the bandit, 'hopper-medium-v2', the Minari dataset id)
    obs_dim: int
    action_dim: int
    max_episode_steps: int | None  # None only for a Minari env without a time limit (not evaluable)
    d4rl_reference: str | None = None  # D4RL dataset whose reference returns normalise evaluation returns
    evaluation_refusal: str | None = None  # why the task can be trained on but not evaluated (None: it can be)

    def data_source(self, data_dir) -> tuple[str, str | None]:
        """The (task or file, data directory) arguments of `vgf.data.load_task_dataset` for this task's data.

        D4RL tasks read `<data_dir>/<name>.hdf5` (FileNotFoundError naming that path when it is missing); Minari
        tasks read Minari's local directory, whatever `data_dir` is; the others read `data_dir`.
        """
        if self.task.startswith(D4RL_PREFIX):
            path = parse_d4rl_task(self.task).dataset_path(data_dir)
            if not path.is_file():
                raise FileNotFoundError(
                    f"task {self.task!r} trains on the D4RL file {path}, which does not exist: put the D4RL HDF5 "
                    f"file there (named {path.name}) or pass another --data-dir. Nothing is downloaded"
                )
            return str(path), data_dir
        if self.task.startswith(MINARI_PREFIX):
            return self.task, str(minari_datasets_root())
        return self.task, data_dir


def task_spec(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of a task name; raises ValueError (listing the valid patterns) for unknown names.

    A Minari task reads its dataset's metadata (and builds its env once, to check it can be built here).
    """
    if task == BANDIT_TASK:
        return TaskSpec(BANDIT_TASK, BANDIT_ENV_ID, BANDIT_TASK, _BANDIT_OBS_DIM, _BANDIT_ACTION_DIM, 1)
    if task.startswith(D4RL_PREFIX):
        d4rl = parse_d4rl_task(task)
        return TaskSpec(
            d4rl.task, d4rl.env_id, d4rl.dataset_name, d4rl.obs_dim, d4rl.action_dim, d4rl.max_episode_steps,
            d4rl_reference=d4rl.dataset_name, evaluation_refusal=d4rl.evaluation_refusal,
        )
    if task.startswith(MINARI_PREFIX):
        minari = parse_minari_task(task)
        return TaskSpec(
            minari.task, minari.env_spec.id if minari.env_spec else None, minari.dataset_id, minari.obs_dim,
            minari.action_dim, minari.max_episode_steps, evaluation_refusal=minari.evaluation_refusal,
        )
    parsed = parse_task(task)
    return TaskSpec(
        parsed.task, parsed.env_id, parsed.dataset_name, parsed.obs_dim, parsed.action_dim, parsed.max_episode_steps
    )


_THREAD_LIMIT_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_thread_children() -> Iterator[None]:
    """Processes started inside this block run their BLAS / OpenMP on one thread (unless the user set the limits).

    Env workers each mean to use one core. OpenBLAS (OGBench's controllers call numpy.linalg) would otherwise start a
    thread per core in every worker, and their spinning threads fight over the cores (measured: 2 workers on 2 cores
    gave no speed-up at all). Children read the limits from the environment they inherit when they start.
    """
    saved = {name: os.environ.get(name) for name in _THREAD_LIMIT_VARS}
    for name in _THREAD_LIMIT_VARS:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_env(task: str, *, fresh: bool = False) -> gymnasium.Env:
    """Build the environment for a task name.

    'bandit' gives a plain :class:`ContextualBanditEnv` (also registered as ``'vgf/ContextualBandit-v0'``).
    OGBench names ``'{family}-{datatype}-singletask[-task{1..5}]'`` give ``gymnasium.make(env_id)`` with its usual
    wrappers (TimeLimit at the OGBench episode length). Manipulation envs (cube, scene, puzzle) are cheap clones of a
    cached prototype (~5 ms instead of ~1.5 s each; see :mod:`vgf.envs.ogbench_envs`); ``fresh=True`` builds from
    scratch. ``'d4rl:<name>'`` gives the matching Gymnasium MuJoCo env (ValueError for AntMaze, which has none) and
    ``'minari:<dataset id>'`` the env Minari recorded for the dataset. Each returned env is independent. Never
    downloads anything.
    """
    if task == BANDIT_TASK:
        return ContextualBanditEnv()
    if task.startswith(D4RL_PREFIX):
        return make_d4rl_env(parse_d4rl_task(task))
    if task.startswith(MINARI_PREFIX):
        return make_minari_env(parse_minari_task(task))
    return make_ogbench_env(parse_task(task), fresh=fresh)


__all__ = [
    "BANDIT_ENV_ID",
    "BANDIT_TASK",
    "D4RL_PREFIX",
    "MINARI_PREFIX",
    "ContextualBanditEnv",
    "TaskSpec",
    "clear_env_cache",
    "make_env",
    "one_thread_children",
    "task_spec",
    "usable_cores",
    "valid_patterns",
]
