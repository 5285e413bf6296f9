"""D4RL tasks, ``'d4rl:<D4RL dataset name>'``, evaluated in Gymnasium's MuJoCo environments built locally.

D4RL's locomotion datasets were recorded in gym's mujoco-py ``*-v2`` environments (MuJoCo 2.x), which no longer
install. Evaluation uses Gymnasium's ``*-v5`` environments instead: the same bodies, reward terms, termination rules,
reset noise and 1000-step episodes, and the same observation layout (hopper 11, halfcheetah 17, walker2d 17 dims;
ant 111 after the padding below), but on current MuJoCo and with small model changes. **Their dynamics therefore
differ slightly from D4RL's: returns, and the D4RL normalised scores computed from them, are comparable with
published numbers but not identical to them.** Two choices bring the envs closer to D4RL's:

* Walker2d is built from Gymnasium's v2-v4 model file ``walker2d.xml`` (feet friction 0.9 right / 1.9 left, as in
  D4RL) instead of the v5 one (1.9 on both feet).
* Ant: D4RL's 111-dim observation is ``qpos[2:]`` (13), ``qvel`` (14) and 84 contact forces, and mujoco-py 2.x left
  those forces at zero in every ``ant-*`` dataset. ``Ant-v5`` is built without contact forces in its observation
  (27 dims), padded with 84 zeros, and with ``contact_cost_weight=0`` (that cost was 0 in D4RL for the same reason).

AntMaze has no Gymnasium environment with D4RL's maze layouts, goals and 29-dim observation (Gymnasium-Robotics and
OGBench mazes differ), so ``d4rl:antmaze-*`` tasks train but refuse evaluation.

The dataset of ``d4rl:<name>`` is the file ``<data dir>/<name>.hdf5``; nothing is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium
import numpy as np

D4RL_PREFIX = "d4rl:"
LOCAL_VERSION = 5  # '<env>-<dataset>-v5': D4RL's protocol, made locally in these envs by `vgf data make`

_LOCOMOTION_DATASETS = ("random", "medium", "expert", "medium-replay", "medium-expert")
_ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
_NAME_RE = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<dataset>[a-z-]+)-v(?P<version>\d+)$")

_ANT_CONTACT_FORCE_DIMS = 84  # 14 bodies x 6, all zero in D4RL's ant-* datasets


@dataclass(frozen=True)
class _Locomotion:
    env_id: str
    obs_dim: int  # D4RL's, which the built env is checked against
    action_dim: int
    make_kwargs: dict = field(default_factory=dict)


_LOCOMOTION: dict[str, _Locomotion] = {
    "hopper": _Locomotion("Hopper-v5", 11, 3),
    "halfcheetah": _Locomotion("HalfCheetah-v5", 17, 6),
    "walker2d": _Locomotion("Walker2d-v5", 17, 6, {"xml_file": "walker2d.xml"}),
    "ant": _Locomotion("Ant-v5", 111, 8, {"include_cfrc_ext_in_observation": False, "contact_cost_weight": 0.0}),
}
_LOCOMOTION_EPISODE_STEPS = 1000
_ANTMAZE_OBS_DIM, _ANTMAZE_ACTION_DIM = 29, 8
_ANTMAZE_REFUSAL = (
    "D4RL AntMaze has no Gymnasium equivalent (D4RL's maze layouts, goals and 29-dim observation); it can be trained "
    "on but not evaluated here. Evaluate the checkpoint in D4RL's own antmaze env (mujoco-py) instead"
)


@dataclass(frozen=True)
class D4RLTask:
    """A parsed ``'d4rl:<name>'`` task."""

    task: str  # 'd4rl:hopper-medium-v2'
    dataset_name: str  # 'hopper-medium-v2': the file stem and the key of D4RL's reference returns
    family: str  # 'hopper', ..., 'antmaze'
    env_id: str | None  # the Gymnasium env evaluating it; None for AntMaze
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    evaluation_refusal: str | None  # why it cannot be evaluated (None: it can)

    def dataset_path(self, data_dir) -> Path:
        return Path(data_dir).expanduser() / f"{self.dataset_name}.hdf5"


def valid_d4rl_names() -> str:
    """Human-readable description of the accepted D4RL task names."""
    return (
        f"'{D4RL_PREFIX}{{env}}-{{dataset}}-v{{0,1,2,{LOCAL_VERSION}}}' with env in {{{', '.join(_LOCOMOTION)}}} and "
        f"dataset in {{{', '.join(_LOCOMOTION_DATASETS)}}} (also full-replay for v1/v2; v{LOCAL_VERSION}: made locally "
        f"by `vgf data make <env>-<dataset>-v{LOCAL_VERSION}`), or "
        f"'{D4RL_PREFIX}antmaze-{{maze}}-v{{0,2}}' with maze in {{{', '.join(_ANTMAZE_DATASETS)}}}"
    )


def _known_dataset(family: str, dataset: str, version: int) -> bool:
    """Whether D4RL published this dataset (and so has reference returns for its normalised score)."""
    if family in _LOCOMOTION:
        if version == LOCAL_VERSION:  # made here by `vgf data make` (vgf.data.locomotion)
            return dataset in _LOCOMOTION_DATASETS
        return version in (0, 1, 2) and (dataset in _LOCOMOTION_DATASETS or (dataset == "full-replay" and version > 0))
    # AntMaze v1 was replaced by v2 after a bug in its data; D4RL lists reference returns for v0 and v2 only.
    return family == "antmaze" and version in (0, 2) and dataset in _ANTMAZE_DATASETS


def parse_d4rl_task(task: str) -> D4RLTask:
    """Parse ``'d4rl:<D4RL dataset name>'``; raises ValueError listing the valid names otherwise."""
    name = task.strip()[len(D4RL_PREFIX):] if task.strip().startswith(D4RL_PREFIX) else ""
    match = _NAME_RE.match(name)
    if match is None or not _known_dataset(match["family"], match["dataset"], int(match["version"])):
        raise ValueError(f"unknown D4RL task {task!r}; valid D4RL tasks are {valid_d4rl_names()}")
    family = match["family"]
    if family == "antmaze":
        # D4RL's umaze episodes are 700 steps, the larger mazes' 1000.
        steps = 700 if match["dataset"].startswith("umaze") else 1000
        return D4RLTask(D4RL_PREFIX + name, name, family, None, _ANTMAZE_OBS_DIM, _ANTMAZE_ACTION_DIM, steps,
                        f"{D4RL_PREFIX}{name}: {_ANTMAZE_REFUSAL}")
    env = _LOCOMOTION[family]
    return D4RLTask(D4RL_PREFIX + name, name, family, env.env_id, env.obs_dim, env.action_dim,
                    _LOCOMOTION_EPISODE_STEPS, None)


class _ZeroContactForces(gymnasium.ObservationWrapper):
    """Appends the 84 contact-force entries of D4RL's ant observation, which are zero throughout its datasets."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        inner = env.observation_space
        self._zeros = np.zeros(_ANT_CONTACT_FORCE_DIMS, dtype=inner.dtype)
        self.observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, shape=(inner.shape[0] + _ANT_CONTACT_FORCE_DIMS,), dtype=inner.dtype
        )

    def observation(self, observation):
        return np.concatenate([observation, self._zeros])


def make_d4rl_env(task: D4RLTask) -> gymnasium.Env:
    """The Gymnasium env evaluating a D4RL task (TimeLimit at 1000 steps); ValueError for AntMaze."""
    if task.evaluation_refusal is not None:
        raise ValueError(task.evaluation_refusal)
    locomotion = _LOCOMOTION[task.family]
    env = gymnasium.make(locomotion.env_id, max_episode_steps=task.max_episode_steps, **locomotion.make_kwargs)
    if task.family == "ant":
        env = _ZeroContactForces(env)
    dims = (env.observation_space.shape, env.action_space.shape)
    if dims != ((task.obs_dim,), (task.action_dim,)):
        raise ValueError(
            f"{task.task}: {locomotion.env_id} has observation shape {dims[0]} and action shape {dims[1]}, but D4RL's "
            f"{task.family} data has ({task.obs_dim},) and ({task.action_dim},); this Gymnasium version's env differs"
        )
    return env
