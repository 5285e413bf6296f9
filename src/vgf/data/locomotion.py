"""D4RL-protocol locomotion datasets made locally: `<env>-<dataset>-v5.hdf5` in D4RL's layout, from a SAC teacher.

D4RL's recipe (Fu et al. 2020, `scripts/generation/mujoco/` of its repository), in Gymnasium's v5 envs:
* `random`: a randomly initialised SAC policy's samples;
* `medium`: the teacher at the first evaluation whose mean return reaches one third of the expert's, then
  `transitions` samples of its stochastic policy;
* `medium-replay`: every transition the teacher's replay buffer held up to that evaluation;
* `expert`: the teacher trained to its step budget, then samples of its stochastic policy;
* `medium-expert`: `medium` and `expert` concatenated.
The expert return that sets the threshold is D4RL's own reference (its normalised score's 100), so "medium" here
is a normalised evaluation score of about 33. The envs are those `d4rl:<name>` tasks evaluate in
(:mod:`vgf.envs.d4rl_envs`), so a dataset, its training and its evaluation share one set of dynamics.

Collection: episodes are run `EPISODES_PER_CHUNK` at a time in lock-step, each from its own seed (reset and action
noise), the policy evaluated in float64 on fixed-size batches, chunks in order; so a seed gives the same bytes
whatever the number of worker processes.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np

import vgf
from vgf.data.d4rl import load_d4rl_hdf5
from vgf.data.d4rl_scores import D4RL_REFERENCE_RETURNS, d4rl_normalized_score
from vgf.data.dataset import DatasetError
from vgf.data.sac_teacher import TRANSITION_KEYS, GaussianActor, SACTeacher, TeacherConfig, stack_transitions
from vgf.envs import one_thread_children, usable_cores
from vgf.envs.d4rl_envs import make_d4rl_env, parse_d4rl_task
from vgf.files import fsync_directory, make_directories, temporary_name
from vgf.provenance import machine_description

__all__ = [
    "LOCOMOTION_DATASETS",
    "dataset_summary",
    "LOCOMOTION_ENVS",
    "MEDIUM_FRACTION",
    "generate_locomotion_dataset",
    "is_locomotion_name",
    "locomotion_dataset_path",
    "medium_threshold",
    "parse_locomotion_name",
]

LOCOMOTION_ENVS = ("hopper", "walker2d", "halfcheetah", "ant")
LOCOMOTION_DATASETS = ("random", "medium", "medium-replay", "expert", "medium-expert")
VERSION = "v5"  # Gymnasium's v5 MuJoCo envs; the name keeps these files apart from D4RL's own v0-v2
# D4RL's wiki: "medium" is a policy "trained to approximately 1/3 the performance of the expert" (quoted in D4RL issue
# #119). The expert's performance is D4RL's reference expert return (d4rl/infos.py REF_MAX_SCORE).
MEDIUM_FRACTION = 1.0 / 3.0
MEDIUM_THRESHOLD_SOURCE = "D4RL wiki: medium = SAC trained to about 1/3 of the expert (D4RL issue #119); expert = " \
    "D4RL's reference expert return (d4rl/infos.py REF_MAX_SCORE)"
EPISODES_PER_CHUNK = 10
DEFAULT_TRANSITIONS = 1_000_000  # D4RL's 1M samples per dataset
_NAME = re.compile(rf"^(?P<env>[a-z0-9]+)-(?P<dataset>[a-z-]+)-{VERSION}$")
_STREAMS = {"random": 1, "medium": 2, "expert": 3, "teacher-eval": 4}  # independent seed streams per use


def _valid_names() -> str:
    return f"<env>-<dataset>-{VERSION} with env in {{{', '.join(LOCOMOTION_ENVS)}}} and dataset in " \
        f"{{{', '.join(LOCOMOTION_DATASETS)}}}"


def is_locomotion_name(name: str) -> bool:
    """Whether `name` asks for a locomotion dataset (it ends in -v5), valid or not."""
    return str(name).endswith(f"-{VERSION}")


def parse_locomotion_name(name: str) -> tuple[str, str]:
    """'hopper-medium-replay-v5' -> ('hopper', 'medium-replay'); DatasetError listing the valid names otherwise."""
    match = _NAME.match(str(name))
    if match is None or match["env"] not in LOCOMOTION_ENVS or match["dataset"] not in LOCOMOTION_DATASETS:
        raise DatasetError(f"unknown locomotion dataset {name!r}; valid names are {_valid_names()}")
    return match["env"], match["dataset"]


def locomotion_dataset_path(out_dir, name: str) -> Path:
    parse_locomotion_name(name)
    return Path(out_dir).expanduser() / f"{name}.hdf5"


def medium_threshold(env: str) -> float:
    """The evaluated return the teacher must reach for `medium`: a third of D4RL's expert return for `env`."""
    return MEDIUM_FRACTION * D4RL_REFERENCE_RETURNS[f"{env}-medium-v2"][1]


# --------------------------------------------------------------------------------------------------
# Environments and episodes
# --------------------------------------------------------------------------------------------------


class _StateBeforeStep(gymnasium.Wrapper):
    """Puts MuJoCo's qpos / qvel before each step into the step's info (D4RL's infos/qpos, infos/qvel)."""

    def step(self, action):
        data = self.env.unwrapped.data
        qpos, qvel = data.qpos.astype(np.float32), data.qvel.astype(np.float32)
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "prev_qpos": qpos, "prev_qvel": qvel}


def make_locomotion_env(env: str):
    """The Gymnasium v5 env of `env`, as `d4rl:<env>-*-v5` tasks evaluate in, with the pre-step state in info."""
    return _StateBeforeStep(make_d4rl_env(parse_d4rl_task(f"d4rl:{env}-medium-{VERSION}")))


def run_episodes(envs: list, actor: GaussianActor, seeds: list[int], stochastic: bool) -> list[dict[str, np.ndarray]]:
    """One episode per seed, run in lock-step in `envs` (one env per seed): reset and action noise from the seed.

    The actor sees a batch of fixed size `len(envs)` at every step (finished episodes keep their last observation),
    so each episode's actions depend on its own seed alone.
    """
    rngs = [np.random.default_rng(seed) for seed in seeds]
    observations = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]).astype(np.float32)
    action_dim = envs[0].action_space.shape[0]
    rows: list[list] = [[] for _ in seeds]
    running = np.ones(len(seeds), dtype=bool)
    while running.any():
        noise = np.stack([rng.standard_normal(action_dim) if live else np.zeros(action_dim)
                          for rng, live in zip(rngs, running)]) if stochastic else None
        actions = actor.act(observations, noise)
        for i in np.flatnonzero(running):
            next_obs, reward, terminated, truncated, info = envs[i].step(actions[i])
            rows[i].append((observations[i].copy(), actions[i], float(reward), np.asarray(next_obs, np.float32),
                            bool(terminated), bool(truncated) and not terminated, info["prev_qpos"], info["prev_qvel"]))
            observations[i] = next_obs
            running[i] = not (terminated or truncated)
    return [stack_transitions(episode) for episode in rows]


def _seeds(seed: int, stream: str) -> Iterator[int]:
    sequence = np.random.SeedSequence([int(seed), _STREAMS[stream]])
    while True:
        yield int(sequence.spawn(1)[0].generate_state(1, dtype=np.uint32)[0])


_WORKER: dict = {}  # a worker process's envs


def _run_chunk(env: str, actor_arrays: dict, seeds: list[int], stochastic: bool) -> list[dict]:
    envs = _WORKER.setdefault(env, [make_locomotion_env(env) for _ in range(EPISODES_PER_CHUNK)])
    return run_episodes(envs[: len(seeds)], GaussianActor.from_arrays(actor_arrays), seeds, stochastic)


@contextlib.contextmanager
def _chunks_in_order(env: str, actor: GaussianActor, seeds: Iterator[int], stochastic: bool,
                     workers: int) -> Iterator[Iterator[list[dict]]]:
    """Chunks of `EPISODES_PER_CHUNK` episodes, in seed order, for as long as the caller takes them; run in this
    process (`workers` <= 1) or in `workers` spawned processes a few chunks ahead."""
    arrays = actor.to_arrays()

    def next_seeds() -> list[int]:
        return [next(seeds) for _ in range(EPISODES_PER_CHUNK)]

    if workers <= 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            yield (_run_chunk(env, arrays, next_seeds(), stochastic) for _ in itertools.count())
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    limits = one_thread_children()

    def ordered() -> Iterator[list[dict]]:
        window: collections.deque = collections.deque()
        while True:
            while len(window) < 2 * workers:
                window.append(executor.submit(_run_chunk, env, arrays, next_seeds(), stochastic))
            yield window.popleft().result()

    try:
        with limits:
            yield ordered()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def collect_transitions(env: str, actor: GaussianActor, transitions: int, seed: int, stream: str, workers: int,
                        progress: bool = True) -> dict[str, np.ndarray]:
    """`transitions` samples of the actor's stochastic policy (the last episode cut, and flagged as a time-out)."""
    from tqdm.auto import tqdm

    episodes, total = [], 0
    with _chunks_in_order(env, actor, _seeds(seed, stream), True, workers) as chunks, \
            tqdm(total=transitions, desc=f"collecting {env} ({stream})", unit="step", disable=not progress,
                 dynamic_ncols=True) as bar:
        for chunk in chunks:
            for episode in chunk:
                take = min(len(episode["rewards"]), transitions - total)
                episodes.append({key: value[:take] for key, value in episode.items()})
                total += take
                bar.update(take)
                if total == transitions:
                    break
            if total == transitions:
                break
    arrays = {key: np.concatenate([episode[key] for episode in episodes]) for key in TRANSITION_KEYS}
    arrays["timeouts"][-1] |= not arrays["terminals"][-1]
    return arrays


def evaluate_actor(env: str, actor: GaussianActor, episodes: int, seed: int, index: int) -> list[float]:
    """Returns of the actor's deterministic policy (its mode) over `episodes` episodes; the `index`-th evaluation
    of a teacher run draws its own initial states."""
    seeds = _seeds(seed * 100_003 + index, "teacher-eval")
    envs = _WORKER.setdefault(env, [make_locomotion_env(env) for _ in range(EPISODES_PER_CHUNK)])
    returns = []
    while len(returns) < episodes:
        count = min(EPISODES_PER_CHUNK, episodes - len(returns))
        chunk = [next(seeds) for _ in range(EPISODES_PER_CHUNK)]  # full batches: the same numbers whatever `episodes`
        returns += [float(ep["rewards"].sum()) for ep in run_episodes(envs, actor, chunk, stochastic=False)[:count]]
    return returns


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def episode_returns(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Undiscounted return of every episode (an episode ends at a terminal or a time-out, and at the end)."""
    ends = arrays["terminals"] | arrays["timeouts"]
    ends[-1] = True
    episode = np.concatenate([[0], np.cumsum(ends[:-1])])
    return np.bincount(episode, weights=arrays["rewards"].astype(np.float64))


def write_d4rl_hdf5(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write D4RL's layout (`infos/qpos`, `infos/qvel` for the state) atomically, with no timestamps in the file,
    so the same arrays and attributes give the same bytes. Arrays are gzip-compressed (byte-shuffled first): a file
    small enough to keep beside the runs that trained on it, since a remade one differs between machines."""
    import h5py

    path = Path(path)
    make_directories(path.parent)
    tmp = temporary_name(path)
    compressed = {"compression": "gzip", "compression_opts": 6, "shuffle": True, "track_times": False}
    try:
        with h5py.File(tmp, "w", track_order=True) as handle:
            for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
                handle.create_dataset(key, data=arrays[key], **compressed)
            for key in ("qpos", "qvel"):
                handle.create_dataset(f"infos/{key}", data=arrays[key], **compressed)
            for key, value in attrs.items():
                handle.attrs[key] = value
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_transitions(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        arrays = {key: handle[key][()] for key in ("observations", "actions", "rewards", "next_observations",
                                                     "terminals", "timeouts")}
        arrays["qpos"], arrays["qvel"] = handle["infos/qpos"][()], handle["infos/qvel"][()]
        return arrays


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata

    import gymnasium
    import mujoco

    return {"gymnasium_version": gymnasium.__version__, "mujoco_version": mujoco.__version__,
            "vgf_version": vgf.__version__, "machine": machine_description(),
            "teacher_algorithm": f"SAC (sbx-rl {metadata.version('sbx-rl')}, MlpPolicy, sbx defaults)"}


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def generate_locomotion_dataset(
    name: str,
    out_dir,
    transitions: int = DEFAULT_TRANSITIONS,
    seed: int = 0,
    workers: int | None = None,
    teacher_dir=None,
    teacher_budget: int = TeacherConfig.__dataclass_fields__["budget_steps"].default,
    medium_return: float | None = None,
    teacher_settings: dict | None = None,
    progress: bool = True,
) -> Path:
    """Make `out_dir/<name>.hdf5` (e.g. 'hopper-medium-v5'); returns its path. See the module docstring.

    The teacher run lives in `teacher_dir/<env>-v5-s<seed>` (default `out_dir/teachers`) and is resumed or reused by
    every dataset of that env and seed. `medium_return` overrides the medium threshold (default `medium_threshold`);
    `teacher_settings` other `TeacherConfig` fields (tests use tiny ones). Raises `DatasetError` for a bad name or
    size and `TeacherError` when the teacher does not reach the threshold within `teacher_budget` steps.
    """
    env, dataset = parse_locomotion_name(name)
    if int(transitions) != transitions or transitions < 1:
        raise DatasetError(f"{name}: transitions must be a positive integer, got {transitions!r}")
    if workers is not None and workers < 0:
        raise DatasetError(f"{name}: workers must be >= 0, got {workers!r}")
    workers = usable_cores() if workers is None else workers
    out_dir = Path(out_dir).expanduser()
    threshold = medium_threshold(env) if medium_return is None else float(medium_return)
    config = TeacherConfig(env, seed=int(seed), budget_steps=int(teacher_budget), medium_return=threshold,
                           **(teacher_settings or {}))
    teacher_root = out_dir / "teachers" if teacher_dir is None else Path(teacher_dir).expanduser()
    teacher = SACTeacher(teacher_root / f"{env}-{VERSION}-s{seed}", config, lambda: make_locomotion_env(env))

    def evaluate(actor, index):
        return evaluate_actor(env, actor, config.eval_episodes, config.seed, index)

    parts = ("medium", "expert") if dataset == "medium-expert" else (dataset,)
    pieces, records = [], []
    for part in parts:
        stage = "medium" if part == "medium-replay" else part
        record = teacher.ensure(stage, progress=progress, evaluate=evaluate)
        if part == "medium-replay":
            arrays = teacher.transitions(record["log_transitions"])
        else:
            arrays = collect_transitions(env, teacher.actor(stage), int(transitions), seed, stage, workers, progress)
        pieces.append(arrays)
        records.append((part, record))
    arrays = {key: np.concatenate([piece[key] for piece in pieces]) for key in TRANSITION_KEYS}

    returns = episode_returns(arrays)
    attrs = {
        "dataset": name, "env_id": parse_d4rl_task(f"d4rl:{name}").env_id,
        "protocol": "D4RL locomotion (Fu et al. 2020) with a local SAC teacher in Gymnasium's v5 envs (vgf data make)",
        "seed": int(seed), **_versions(),
        "medium_threshold_return": threshold if any(p in ("medium", "medium-replay") for p in parts) else math.nan,
        "medium_threshold_source": MEDIUM_THRESHOLD_SOURCE if medium_return is None else "set by the caller",
        "episodes": int(len(returns)), "return_mean": float(returns.mean()), "return_min": float(returns.min()),
        "return_max": float(returns.max()),
    }
    for part, record in records:
        attrs[f"{part}_teacher_steps"] = int(record["steps"])
        attrs[f"{part}_teacher_eval_return"] = float(record.get("return_mean", math.nan))
        attrs[f"{part}_teacher_eval_episodes"] = int(record.get("episodes", 0))
    path = locomotion_dataset_path(out_dir, name)
    write_d4rl_hdf5(path, arrays, attrs)
    return path


def dataset_summary(path) -> dict:
    """One row about a made dataset: its provenance attributes, size, episode returns (and their D4RL-normalised
    mean) and the sha256 of the file, so a table of datasets can be rebuilt and the files checked when remade."""
    import hashlib

    import h5py

    path = Path(path)
    arrays = read_transitions(path)
    with h5py.File(path, "r") as handle:
        attrs = {key: value.item() if hasattr(value, "item") else value for key, value in handle.attrs.items()}
    returns = episode_returns(arrays)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {
        **attrs,
        "file": path.name,
        "sha256": digest.hexdigest(),
        "content_sha256": load_d4rl_hdf5(path).content_sha256(),  # runs record this one: it ignores compression
        "transitions": int(len(arrays["rewards"])),
        "episodes": int(len(returns)),
        "terminals": int(arrays["terminals"].sum()),
        "return_mean": float(returns.mean()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "normalized_return_mean": float(d4rl_normalized_score(attrs["dataset"], returns.mean())),
    }
