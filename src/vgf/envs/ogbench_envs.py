"""OGBench single-task environments by task name, built quickly and quietly.

Task names follow OGBench's dataset-centred convention without the version suffix:
``'{family}-{datatype}-singletask[-task{1..5}]'`` (for example ``'cube-single-play-singletask-task1'``). The
environment id drops the dataset type, exactly as OGBench does: ``'cube-single-singletask-task1-v0'``.

Three practical problems are handled here:

* **Headless MuJoCo.** Building a manipulation env imports dm_control's viewer, which initialises GLFW and prints
  "X11: The DISPLAY environment variable is missing" on machines without a display. :func:`configure_headless_mujoco`
  (called by ``vgf.envs`` at import time, before MuJoCo or OGBench are imported there) sets ``MUJOCO_GL=disable``
  when no display is present and the variable is unset. That loads no OpenGL stack at all, so env creation can never
  fail on a missing EGL/OSMesa driver; state-based RL never renders. To render offscreen, export ``MUJOCO_GL=egl``
  (or ``osmesa``) yourself before importing vgf: an existing value is never overridden.
* **Slow, heavy manipulation envs.** Creating one OGBench manipulation env parses the MJCF scene with dm_control and
  compiles it twice: about 1.0-3.0 s and 150 MB of RSS per env (cube-single: ~1.4 s, ~150 MB, of which ~63 MB is the
  compiled MjModel with its meshes and textures). Batched evaluation needs hundreds of envs, so :func:`make_env`
  builds one private *prototype* per env id and hands out *clones* of it: an independent copy of all Python state and
  of the ``MjData`` (the simulation state), sharing the read-only ``MjModel`` and the dm_control MJCF tree.
  A clone costs ~5 ms and ~1.4 MB. The few model fields OGBench writes per episode (geom/material colours, target
  site positions, and in ``scene`` the joint damping that implements the drawer/window locks) are kept per clone by
  :class:`_PrivateModelFields`, which swaps them into the shared model around every ``reset``/``step``/``render``
  under a lock shared by all clones of one prototype. Clones produce bit-identical trajectories to freshly built
  envs (tested). Pass ``fresh=True`` to :func:`make_env` to bypass the cache.
* **Noise.** OGBench's manipulation envs build a new float64-bounded ``Box`` on every reset, and gymnasium warns
  each time that the bounds were cast to float32. :func:`silence_known_warnings` (also run on import of ``vgf.envs``)
  ignores exactly that message; no other warning is touched.
* **Seeded resets.** OGBench settles each manipulation task's goal scene with random actions from an unseeded
  action space, which leaves a different solver warm start after every reset: two episodes of one deterministic
  policy from one seed could part at a contact. :func:`_seed_settling_steps` draws those actions from the reset's
  seed, so an evaluation repeats exactly.

The locomotion families (pointmaze, antmaze, humanoidmaze, antsoccer) build in ~20 ms and are always built fresh.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass

import gymnasium
import numpy as np

# --------------------------------------------------------------------------------------------------------------------
# Headless rendering backend
# --------------------------------------------------------------------------------------------------------------------


def configure_headless_mujoco() -> str | None:
    """Set ``MUJOCO_GL=disable`` on a display-less Linux machine unless the user chose a backend.

    Must run before MuJoCo / dm_control read the variable (``vgf.envs`` calls it on import). Returns the value now in
    effect (``None`` where nothing was set and none was given).
    """
    if "MUJOCO_GL" in os.environ:
        return os.environ["MUJOCO_GL"]
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless:
        os.environ["MUJOCO_GL"] = "disable"
        return "disable"
    return None


def silence_known_warnings() -> None:
    """Ignore gymnasium's harmless "precision lowered by casting to float32" warning about OGBench's action Box."""
    warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32", category=UserWarning)


# --------------------------------------------------------------------------------------------------------------------
# Task table
# --------------------------------------------------------------------------------------------------------------------

_MANIPULATION_TYPES = ("play", "noisy")

# Play dataset name -> the data-collection environment it is generated in (`vgf data make`).
OGBENCH_PLAY_DATASETS: dict[str, str] = {
    "cube-single-play": "cube-single-v0",
    "cube-double-play": "cube-double-v0",
    "cube-triple-play": "cube-triple-v0",
    "scene-play": "scene-v0",
    "puzzle-3x3-play": "puzzle-3x3-v0",
    "puzzle-4x4-play": "puzzle-4x4-v0",
}


@dataclass(frozen=True)
class _Family:
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    datatypes: tuple[str, ...]
    manipulation: bool


# Dimensions and time limits measured on ogbench 1.2.2 (tests re-check them against the registry and real envs).
_FAMILIES: dict[str, _Family] = {
    "cube-single": _Family(28, 5, 200, _MANIPULATION_TYPES, True),
    "cube-double": _Family(37, 5, 500, _MANIPULATION_TYPES, True),
    "cube-triple": _Family(46, 5, 1000, _MANIPULATION_TYPES, True),
    "cube-quadruple": _Family(55, 5, 1000, _MANIPULATION_TYPES, True),
    "scene": _Family(40, 5, 750, _MANIPULATION_TYPES, True),
    "puzzle-3x3": _Family(55, 5, 500, _MANIPULATION_TYPES, True),
    "puzzle-4x4": _Family(83, 5, 500, _MANIPULATION_TYPES, True),
    "puzzle-4x5": _Family(99, 5, 1000, _MANIPULATION_TYPES, True),
    "puzzle-4x6": _Family(115, 5, 1000, _MANIPULATION_TYPES, True),
    "pointmaze-medium": _Family(2, 2, 1000, ("navigate", "stitch"), False),
    "pointmaze-large": _Family(2, 2, 1000, ("navigate", "stitch"), False),
    "pointmaze-giant": _Family(2, 2, 1000, ("navigate", "stitch"), False),
    "pointmaze-teleport": _Family(2, 2, 1000, ("navigate", "stitch"), False),
    "antmaze-medium": _Family(29, 8, 1000, ("navigate", "stitch", "explore"), False),
    "antmaze-large": _Family(29, 8, 1000, ("navigate", "stitch", "explore"), False),
    "antmaze-giant": _Family(29, 8, 1000, ("navigate", "stitch"), False),
    "antmaze-teleport": _Family(29, 8, 1000, ("navigate", "stitch", "explore"), False),
    "humanoidmaze-medium": _Family(69, 21, 2000, ("navigate", "stitch"), False),
    "humanoidmaze-large": _Family(69, 21, 2000, ("navigate", "stitch"), False),
    "humanoidmaze-giant": _Family(69, 21, 4000, ("navigate", "stitch"), False),
    "antsoccer-arena": _Family(42, 8, 1000, ("navigate", "stitch"), False),
    "antsoccer-medium": _Family(42, 8, 1000, ("navigate", "stitch"), False),
}

_TASK_RE = re.compile(
    r"^(?P<family>[a-z0-9]+(?:-[a-z0-9]+)*?)-(?P<datatype>[a-z]+)-singletask(?:-task(?P<task>[1-5]))?$"
)


@dataclass(frozen=True)
class OGBenchTask:
    """A parsed OGBench single-task name."""

    task: str  # canonical name, no version suffix
    family: str  # e.g. 'cube-single'
    datatype: str  # e.g. 'play'
    task_id: int | None  # 1..5, or None for OGBench's default task
    env_id: str  # gymnasium id, e.g. 'cube-single-singletask-task1-v0'
    dataset_name: str  # e.g. 'cube-single-play'
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    manipulation: bool


def valid_patterns() -> str:
    """Human-readable description of the accepted OGBench task names."""
    by_types: dict[tuple[str, ...], list[str]] = {}
    for name, fam in _FAMILIES.items():
        by_types.setdefault(fam.datatypes, []).append(name)
    lines = ["'{family}-{datatype}-singletask' or '{family}-{datatype}-singletask-task{1..5}' with"]
    for types, names in by_types.items():
        lines.append(f"  family in {{{', '.join(names)}}}, datatype in {{{', '.join(types)}}}")
    return "\n".join(lines)


def parse_task(task: str) -> OGBenchTask:
    """Parse an OGBench single-task name (an optional trailing '-v0' is accepted and dropped).

    Raises ValueError for names that do not follow the pattern or name an unknown family / dataset type.
    """
    name = task.strip()
    if name.endswith("-v0"):
        name = name[: -len("-v0")]
    match = _TASK_RE.match(name)
    family = match.group("family") if match else None
    datatype = match.group("datatype") if match else None
    if match is None or family not in _FAMILIES or datatype not in _FAMILIES[family].datatypes:
        raise ValueError(
            f"unknown task {task!r}; valid tasks are 'bandit', 'd4rl:<D4RL dataset name>', "
            f"'minari:<local Minari dataset id>' or OGBench single-task names:\n{valid_patterns()}"
        )
    fam = _FAMILIES[family]
    task_id = int(match.group("task")) if match.group("task") else None
    suffix = "" if task_id is None else f"-task{task_id}"
    return OGBenchTask(
        task=name,
        family=family,
        datatype=datatype,
        task_id=task_id,
        env_id=f"{family}-singletask{suffix}-v0",
        dataset_name=f"{family}-{datatype}",
        obs_dim=fam.obs_dim,
        action_dim=fam.action_dim,
        max_episode_steps=fam.max_episode_steps,
        manipulation=fam.manipulation,
    )


# --------------------------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------------------------


def ensure_registered() -> None:
    """Import OGBench so that its gymnasium ids exist (registration only; nothing is downloaded)."""
    import ogbench  # noqa: F401  (side effect: gymnasium.register for every OGBench id)


def _build(env_id: str) -> gymnasium.Env:
    ensure_registered()
    env = gymnasium.make(env_id)
    # OGBench manipulation envs compile their model on the first reset (gymnasium's wrappers already trigger it when
    # they read the spaces); make sure it happened so that clones share one compiled model.
    if getattr(env.unwrapped, "_model", "absent") is None:
        env.reset(seed=0)
    _seed_settling_steps(env.unwrapped)
    return env


def _seed_settling_steps(base: gymnasium.Env) -> None:
    """Make `reset(seed=s)` of a newly built OGBench manipulation env a function of s alone.

    On reset in task mode, OGBench settles the goal scene with a few random actions, `self.action_space.sample()`,
    and then restores the positions and velocities. `action_space` is a property that builds a new, unseeded Box on
    every call, so those actions come from OS entropy, and what they leave behind (the constraint solver's warm
    start) differs from one reset to the next: two episodes reset with one seed and given identical actions part at
    a later contact (a puzzle button press). Here the env's class gets a subclass whose `action_space` is one Box,
    seeded by every seeded reset; the random actions (and the goal observation they settle) are then the seed's.
    """
    if not hasattr(base, "initialize_episode"):  # not a manipulation env: nothing random outside its seed
        return
    space = base.action_space  # the Box OGBench builds
    base.__class__ = _with_seeded_settling(type(base))
    base._settling_space = space


@functools.cache
def _with_seeded_settling(cls: type) -> type:
    """`cls` with one `action_space` Box (`_settling_space`), reseeded by every seeded reset."""

    class Seeded(cls):
        __doc__ = cls.__doc__

        @property
        def action_space(self):
            return self._settling_space

        def reset(self, seed=None, options=None, **kwargs):
            if seed is not None:
                self._settling_space.seed(seed)
            return super().reset(seed=seed, options=options, **kwargs)

    Seeded.__name__, Seeded.__qualname__, Seeded.__module__ = cls.__name__, cls.__qualname__, cls.__module__
    return Seeded


def _collect(obj, seen: set[int], models: list, datas: list, shared: list) -> None:
    """Walk an env's object graph; collect MuJoCo models/datas and dm_control objects (kept shared by clones)."""
    import mujoco

    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (str, bytes, int, float, bool, type(None), np.ndarray, np.generic)):
            continue
        if isinstance(item, mujoco.MjModel):
            models.append(item)
        elif isinstance(item, mujoco.MjData):
            datas.append(item)
        elif type(item).__module__.startswith("dm_control"):
            shared.append(item)  # MJCF tree and its elements: only used to (re)compile, never per step
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())


# Model arrays OGBench's manipulation envs write during reset/step. Only 'dof_damping' (scene's drawer/window locks)
# affects the dynamics; the others are visual. All of them are kept per clone.
_PRIVATE_MODEL_FIELDS = ("dof_damping", "site_pos", "geom_rgba", "mat_rgba")


class _PrivateModelFields(gymnasium.Wrapper):
    """Keeps a clone's own copy of the few MjModel fields that OGBench mutates, swapping them into the shared model.

    All clones of one prototype share one lock, so clones may be stepped from several threads (one at a time).
    """

    def __init__(self, env: gymnasium.Env, model, lock: threading.Lock):
        super().__init__(env)
        self._shared_model = model
        self._lock = lock
        self._fields = [(getattr(model, name), getattr(model, name).copy()) for name in _PRIVATE_MODEL_FIELDS]

    def _load(self):
        for shared, own in self._fields:
            np.copyto(shared, own)

    def _save(self):
        for shared, own in self._fields:
            np.copyto(own, shared)

    def reset(self, **kwargs):
        with self._lock:
            self._load()
            out = self.env.reset(**kwargs)
            self._save()
        return out

    def step(self, action):
        with self._lock:
            self._load()
            out = self.env.step(action)
            self._save()
        return out

    def render(self):
        with self._lock:
            self._load()
            return self.env.render()


class _Prototype:
    def __init__(self, env: gymnasium.Env):
        self.env = env
        self.lock = threading.Lock()
        models: list = []
        datas: list = []
        shared: list = []
        _collect(env, set(), models, datas, shared)
        self.models, self.datas, self.shared = models, datas, shared
        self.main_model = env.unwrapped._model

    def clone(self) -> gymnasium.Env:
        memo: dict[int, object] = {id(obj): obj for obj in self.shared}
        for model in self.models:
            memo[id(model)] = model
        for data in self.datas:
            memo[id(data)] = copy.copy(data)  # new MjData with copied state, bound to the same (shared) MjModel
        with self.lock:  # the model is read while copying; keep concurrent clones from swapping fields meanwhile
            env = copy.deepcopy(self.env, memo)
        return _PrivateModelFields(env, self.main_model, self.lock)


_PROTOTYPES: dict[str, _Prototype] = {}
_PROTOTYPES_LOCK = threading.Lock()


def make_ogbench_env(task: OGBenchTask, fresh: bool = False) -> gymnasium.Env:
    """Build the env for a parsed task: a clone of a cached prototype for manipulation families, else a fresh one."""
    if fresh or not task.manipulation:
        return _build(task.env_id)
    with _PROTOTYPES_LOCK:
        proto = _PROTOTYPES.get(task.env_id)
        if proto is None:
            proto = _PROTOTYPES[task.env_id] = _Prototype(_build(task.env_id))
    return proto.clone()


def clear_env_cache() -> None:
    """Drop the cached prototypes (clones already handed out keep working: they hold references to what they share)."""
    with _PROTOTYPES_LOCK:
        _PROTOTYPES.clear()
