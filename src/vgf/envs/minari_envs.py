"""Minari tasks, ``'minari:<dataset id>'``, evaluated in the environment Minari recorded for the dataset.

The dataset is read from Minari's own local directory, by Minari's rule: ``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets``, so that ``vgf train`` and ``vgf eval`` (which knows only the task name) find it the same way;
a data directory given to vgf is not used. Nothing is downloaded and nothing is created there.

The evaluation env is the dataset's evaluation env spec when it has one, else the env spec it was collected with
(what ``MinariDataset.recover_environment(eval_env=True)`` builds), made with ``gymnasium.make`` on this machine.
Dict/Tuple observations are flattened in the same order as the dataset loader flattens them. An env that cannot be
built on this machine (its package missing, say) is an error when the task is named, before any training.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np

MINARI_PREFIX = "minari:"


@dataclass(frozen=True)
class MinariTask:
    """A ``'minari:<dataset id>'`` task, with what its local dataset records about its environment."""

    task: str  # 'minari:<dataset id>'
    dataset_id: str
    env_spec: gymnasium.envs.registration.EnvSpec | None
    obs_dim: int  # flattened
    action_dim: int
    max_episode_steps: int | None
    evaluation_refusal: str | None  # why it cannot be evaluated (None: it can)


def minari_datasets_root() -> Path:
    """Minari's local directory: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    from_env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(from_env).expanduser() if from_env else Path.home() / ".minari" / "datasets"


def parse_minari_task(task: str) -> MinariTask:
    """Read what a local Minari dataset records about its spaces and environment; ValueError when it is not there."""
    dataset_id = task.strip()[len(MINARI_PREFIX):] if task.strip().startswith(MINARI_PREFIX) else ""
    if not dataset_id:
        raise ValueError(f"task {task!r}: expected '{MINARI_PREFIX}<dataset id>', e.g. 'minari:D4RL/door/human-v2'")
    data_path = minari_datasets_root() / dataset_id / "data"
    metadata = data_path / "metadata.json"
    if not metadata.is_file():
        raise ValueError(
            f"task {task!r}: no Minari dataset at {data_path} (Minari's local directory: $MINARI_DATASETS_PATH, "
            f"else ~/.minari/datasets). Nothing is downloaded: run `minari download {dataset_id}` first"
        )
    return _read_dataset(f"{MINARI_PREFIX}{dataset_id}", str(data_path), metadata.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_dataset(task: str, data_path: str, _metadata_mtime_ns: int) -> MinariTask:
    """Cached per dataset directory and metadata version, so building many evaluation envs reads it once."""
    import minari

    try:
        dataset = minari.MinariDataset(data_path)
    except Exception as exc:  # Minari raises ValueError/KeyError/OSError from its storage backends
        raise ValueError(f"task {task!r}: Minari could not read the dataset at {data_path} ({exc!r})") from exc
    action_space = dataset.action_space
    if not isinstance(action_space, gymnasium.spaces.Box):
        raise ValueError(f"task {task!r} ({data_path}): action space {action_space} is not a Box; vgf needs continuous actions")
    refusal, env_spec, steps = None, None, None
    if dataset.env_spec is None:
        refusal = f"task {task!r}: the Minari dataset records no environment (env_spec is None), so it cannot be evaluated"
    else:
        env_spec = _recovered_env_spec(task, dataset)
        steps = env_spec.max_episode_steps
        if steps is None:
            refusal = (
                f"task {task!r}: the env Minari recorded ({env_spec.id}) has no time limit (max_episode_steps=None), "
                "so evaluation episodes might never end"
            )
    return MinariTask(
        task=task,
        dataset_id=task[len(MINARI_PREFIX):],
        env_spec=env_spec,
        obs_dim=int(gymnasium.spaces.flatdim(dataset.observation_space)),
        action_dim=int(np.prod(action_space.shape)),
        max_episode_steps=steps,
        evaluation_refusal=refusal,
    )


def _recovered_env_spec(task: str, dataset) -> gymnasium.envs.registration.EnvSpec:
    """The spec of the env Minari recovers for evaluation, built once here so that a missing package fails when the
    task is named (before any training), not at the first evaluation."""
    try:
        env = dataset.recover_environment(eval_env=True)
    except Exception as exc:  # ModuleNotFoundError, or whatever the env's own constructor raises
        raise ValueError(
            f"task {task!r}: the env Minari recorded ({dataset.env_spec.id}, entry point {dataset.env_spec.entry_point}) "
            f"cannot be built on this machine ({exc!r}); install the package providing it. Nothing is downloaded"
        ) from exc
    env_spec = env.spec
    env.close()
    return env_spec


def make_minari_env(task: MinariTask) -> gymnasium.Env:
    """The env Minari recorded for the dataset, observations flattened to match the dataset's transitions."""
    if task.evaluation_refusal is not None:
        raise ValueError(task.evaluation_refusal)
    env = gymnasium.make(task.env_spec)  # already built once when the task was parsed
    if not (isinstance(env.observation_space, gymnasium.spaces.Box) and len(env.observation_space.shape) == 1):
        env = gymnasium.wrappers.FlattenObservation(env)
    obs_dim = gymnasium.spaces.flatdim(env.observation_space)
    action_dim = int(np.prod(env.action_space.shape))
    if (obs_dim, action_dim) != (task.obs_dim, task.action_dim):
        raise ValueError(
            f"task {task.task!r}: the env built from its spec ({task.env_spec.id}) has observation dim {obs_dim} and "
            f"action dim {action_dim}, but the dataset has {task.obs_dim} and {task.action_dim}"
        )
    return env
