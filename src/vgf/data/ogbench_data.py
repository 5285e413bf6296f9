"""OGBench manipulation "play" datasets: local generation and single-task loading.

Nothing here downloads anything. `generate_ogbench_dataset` re-creates a play dataset on this machine
by driving the environment with the scripted plan oracles that ship in the `ogbench` package, and
writes it in OGBench's own `.npz` layout, so that `ogbench.make_env_and_datasets(...,
dataset_path=...)` (and therefore OGBench's single-task reward relabelling) reads it unchanged.

Play protocol, per episode: reset in data-collection mode, follow the oracle for the environment's
current target task, and as soon as the oracle finishes its plan ask the environment for a new random
target and switch to the matching oracle. Each episode runs a fixed number of steps; the last stored
step is flagged terminal (OGBench's loader drops it as a transition start, so an episode of T steps
yields T - 1 transitions).
"""

from __future__ import annotations

import contextlib
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import vgf.envs  # noqa: F401  (on import, picks a headless MuJoCo GL backend before OGBench/dm_control load)
from vgf.data.check import check_file
from vgf.data.dataset import DEFAULT_ACTION_BOUNDS, Dataset, DatasetError
from vgf.envs import one_thread_children, usable_cores
from vgf.envs.ogbench_envs import OGBENCH_PLAY_DATASETS
from vgf.files import atomic_file

__all__ = [
    "OGBENCH_PLAY_DATASETS",
    "ogbench_dataset_path",
    "ogbench_val_path",
    "generate_ogbench_dataset",
    "parse_ogbench_task",
    "load_ogbench_task",
]

NUM_OGBENCH_TASKS = 5  # every OGBench single-task environment has task1 ... task5
_MAX_EPISODE_RETRIES = 20  # consecutive failed health checks before giving up
_VIEW_MARGIN = 0.1  # metres a cube may stray beyond the workspace box before an episode is redone
# A worker process costs ~2-3 s to start (imports, env build), the time of ~1500 env steps: smaller datasets are
# collected in this process unless workers are asked for.
_PARALLEL_MIN_STEPS = 5000


@contextlib.contextmanager
def _quiet_env_warnings() -> Iterator[None]:
    """Hide gymnasium's harmless notes about OGBench's float64 action-space bounds."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32.*")
        yield


def _import_ogbench():
    with _quiet_env_warnings():
        import ogbench  # noqa: F401  (registers the environments with gymnasium)
    return ogbench


def _valid_names() -> str:
    return ", ".join(OGBENCH_PLAY_DATASETS)


def _check_dataset_name(dataset_name: str) -> None:
    if dataset_name not in OGBENCH_PLAY_DATASETS:
        raise DatasetError(
            f"unknown OGBench dataset {dataset_name!r}; valid datasets: {_valid_names()}"
        )


def ogbench_dataset_path(data_dir, dataset_name: str) -> Path:
    """Where the training file of `dataset_name` lives: `data_dir / f"{dataset_name}-v0.npz"`."""
    _check_dataset_name(dataset_name)
    return Path(data_dir).expanduser() / f"{dataset_name}-v0.npz"


def ogbench_val_path(train_path) -> Path:
    """The validation file OGBench's loader opens beside a training file (`X.npz` -> `X-val.npz`)."""
    train_path = Path(train_path)
    return train_path.with_name(train_path.name[: -len(".npz")] + "-val.npz")


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _family(dataset_name: str) -> str:
    for family in ("cube", "scene", "puzzle"):
        if dataset_name.startswith(family):
            return family
    raise DatasetError(f"unknown OGBench dataset {dataset_name!r}; valid datasets: {_valid_names()}")


def _make_oracles(env, family: str, noise: float, noise_smoothing: float) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    common = dict(env=env, noise=noise, noise_smoothing=noise_smoothing)
    if family == "cube":
        return {"cube": CubePlanOracle(**common)}
    if family == "scene":
        return {
            "cube": CubePlanOracle(**common),
            "button": ButtonPlanOracle(**common),
            "drawer": DrawerPlanOracle(**common),
            "window": WindowPlanOracle(**common),
        }
    return {"button": ButtonPlanOracle(gripper_always_closed=True, **common)}


def _stack_probability(dataset_name: str, rng: np.random.Generator) -> float:
    """Chance that a new cube target is placed on top of another cube (drawn once per episode)."""
    if dataset_name == "cube-single-play":
        return 0.0
    if dataset_name == "cube-double-play":
        return float(rng.uniform(0.0, 0.25))
    if dataset_name == "cube-triple-play":
        return float(rng.uniform(0.05, 0.35))
    return 0.5


def _cubes_in_view(env, info: dict) -> bool:
    """Scene health check: every cube is still within (a margin around) the robot's workspace.

    Very rarely the physics throws a cube out of the scene (e.g. the drawer lock engages while the
    drawer moves with a cube inside); such episodes are discarded and collected again.
    """
    unwrapped = env.unwrapped
    low = unwrapped._workspace_bounds[0] - _VIEW_MARGIN
    high = unwrapped._workspace_bounds[1] + _VIEW_MARGIN
    low = np.array([low[0], low[1], -_VIEW_MARGIN])
    for i in range(unwrapped._num_cubes):
        pos = np.asarray(info[f"privileged/block_{i}_pos"])
        if not (np.all(np.isfinite(pos)) and np.all(pos >= low) and np.all(pos <= high)):
            return False
    return True


def _collect_episode(env, oracles, dataset_name, max_steps, episode_seed, health_check):
    """One play episode; returns a dict of per-step arrays, or None when the health check failed."""
    np.random.seed(episode_seed)  # the plan oracles draw from numpy's global generator
    rng = np.random.default_rng(episode_seed)
    p_stack = _stack_probability(dataset_name, rng)

    ob, info = env.reset(seed=episode_seed)
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(ob, info)
    has_buttons = "prev_button_states" in info

    observations, actions, terminals, qpos, qvel, button_states = [], [], [], [], [], []
    for t in range(max_steps):
        action = np.clip(np.asarray(oracle.select_action(ob, info), dtype=np.float64), -1.0, 1.0)
        next_ob, _reward, terminated, truncated, info = env.step(action)
        last = t == max_steps - 1 or bool(terminated) or bool(truncated)

        observations.append(np.asarray(ob, dtype=np.float32))
        actions.append(action.astype(np.float32))
        terminals.append(last)
        qpos.append(np.asarray(info["prev_qpos"], dtype=np.float32))
        qvel.append(np.asarray(info["prev_qvel"], dtype=np.float32))
        if has_buttons:
            button_states.append(np.asarray(info["prev_button_states"], dtype=np.int64))

        if health_check and not _cubes_in_view(env, info):
            return None
        if last:
            break

        ob = next_ob
        if oracle.done:
            ob, info = env.unwrapped.set_new_target(p_stack=p_stack)
            oracle = oracles[info["privileged/target_task"]]
            oracle.reset(ob, info)

    episode = {
        "observations": np.stack(observations),
        "actions": np.stack(actions),
        "terminals": np.asarray(terminals, dtype=bool),
        "qpos": np.stack(qpos),
        "qvel": np.stack(qvel),
    }
    if has_buttons:
        episode["button_states"] = np.stack(button_states)
    return episode


def _episode_seeds(seed: int) -> Iterator[int]:
    """The seeds of the episodes to try, in order (a failed episode's replacement takes the next one)."""
    sequence = np.random.SeedSequence(int(seed))
    while True:
        yield int(sequence.spawn(1)[0].generate_state(1, dtype=np.uint32)[0])


class _Collector:
    """One data-collection env with its oracles; collects the episode of a seed (None: failed health check)."""

    def __init__(self, dataset_name: str, max_episode_steps: int, noise: float, noise_smoothing: float):
        import gymnasium

        _import_ogbench()
        self.dataset_name, self.max_episode_steps = dataset_name, max_episode_steps
        self.family = _family(dataset_name)
        with _quiet_env_warnings():
            self.env = gymnasium.make(
                OGBENCH_PLAY_DATASETS[dataset_name],
                terminate_at_goal=False,
                mode="data_collection",
                max_episode_steps=max_episode_steps,
            )
        self.oracles = _make_oracles(self.env, self.family, noise, noise_smoothing)

    def __call__(self, episode_seed: int) -> dict | None:
        saved_global_state = np.random.get_state()
        try:
            with _quiet_env_warnings():
                return _collect_episode(self.env, self.oracles, self.dataset_name, self.max_episode_steps,
                                        episode_seed, health_check=self.family == "scene")
        finally:
            np.random.set_state(saved_global_state)

    def close(self) -> None:
        self.env.close()


_WORKER_COLLECTOR: _Collector | None = None  # the collector of a worker process


def _start_worker(*collector_args) -> None:
    global _WORKER_COLLECTOR
    _WORKER_COLLECTOR = _Collector(*collector_args)


def _collect_in_worker(episode_seed: int) -> dict | None:
    return _WORKER_COLLECTOR(episode_seed)


@contextlib.contextmanager
def _episodes_in_order(
    collector_args: tuple, seeds: Iterator[int], workers: int, wanted: int
) -> Iterator[Iterator[dict | None]]:
    """The episodes of `seeds`, in their order, until `wanted` of them have passed the health check; collected in
    this process (`workers` <= 1) or by `workers` processes, each with its own env, a few seeds ahead of the caller
    but never beyond what can still be needed. Every episode depends on its seed alone, so both give the same
    episodes."""
    if workers <= 1:
        collector = _Collector(*collector_args)
        try:
            yield (collector(episode_seed) for episode_seed in seeds)
        finally:
            collector.close()
        return
    import collections
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=collector_args
    )
    limits = one_thread_children()  # held while the executor may start processes: it starts them on demand

    def ordered() -> Iterator[dict | None]:
        window: collections.deque = collections.deque()
        passed = 0
        while passed < wanted:
            while len(window) < 2 * workers and passed + len(window) < wanted:
                window.append(executor.submit(_collect_in_worker, next(seeds)))
            episode = window.popleft().result()
            passed += episode is not None
            yield episode

    try:
        with limits:
            yield ordered()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _savez_reproducibly(handle, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez`'s layout with fixed member timestamps, so that one seed gives the same bytes every time."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def _concat(episodes: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([ep[key] for ep in episodes], axis=0) for key in episodes[0]}


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=not enabled, dynamic_ncols=True)


def generate_ogbench_dataset(
    dataset_name: str,
    out_dir,
    episodes: int = 1000,
    max_episode_steps: int = 1001,
    seed: int = 0,
    noise: float = 0.1,
    noise_smoothing: float = 0.5,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[Path, Path]:
    """Collect an OGBench-format play dataset locally; returns (train_path, val_path).

    `episodes` episodes of `max_episode_steps` steps go to `out_dir/{dataset_name}-v0.npz` and
    `max(1, episodes // 10)` more to the `-val.npz` file beside it. Stored per step: observations,
    actions (float32), terminals (bool, True on the last step of each episode), qpos / qvel before the
    step (float32) and, for environments with buttons, button_states before the step (int64).
    Episodes are collected by `workers` processes (default: one per core, or this process alone for datasets of
    under `_PARALLEL_MIN_STEPS` steps; 0 or 1: this process), each episode from its own seed, so a fixed `seed`
    gives byte-identical files whatever the number of workers. Both files are written atomically.
    """
    _check_dataset_name(dataset_name)
    if int(episodes) != episodes or episodes < 1:
        raise DatasetError(f"{dataset_name}: episodes must be a positive integer, got {episodes!r}")
    if int(max_episode_steps) != max_episode_steps or max_episode_steps < 2:
        raise DatasetError(
            f"{dataset_name}: max_episode_steps must be an integer >= 2 (one transition needs two steps), "
            f"got {max_episode_steps!r}"
        )
    if not (noise >= 0 and noise_smoothing >= 0):
        raise DatasetError(f"{dataset_name}: noise and noise_smoothing must be >= 0, got {noise!r}, {noise_smoothing!r}")
    if workers is not None and workers < 0:
        raise DatasetError(f"{dataset_name}: workers must be >= 0, got {workers!r}")
    episodes, max_episode_steps = int(episodes), int(max_episode_steps)
    num_val = max(1, episodes // 10)
    if workers is None:
        workers = usable_cores() if (episodes + num_val) * max_episode_steps >= _PARALLEL_MIN_STEPS else 0
    workers = min(workers, episodes + num_val)

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path = ogbench_dataset_path(out_dir, dataset_name)
    val_path = ogbench_val_path(train_path)

    collector_args = (dataset_name, max_episode_steps, float(noise), float(noise_smoothing))
    collected: list[dict] = []
    with _episodes_in_order(collector_args, _episode_seeds(seed), workers, episodes + num_val) as results, \
            _progress_bar(episodes + num_val, dataset_name, progress) as bar:
        redone = failed_in_a_row = 0
        for episode in results:
            if episode is None:
                redone, failed_in_a_row = redone + 1, failed_in_a_row + 1
                bar.set_postfix(redone=redone)
                if failed_in_a_row == _MAX_EPISODE_RETRIES:
                    raise RuntimeError(
                        f"{dataset_name}: {_MAX_EPISODE_RETRIES} consecutive episodes failed the health check "
                        "(a cube left the scene); the simulation looks unstable"
                    )
                continue
            failed_in_a_row = 0
            collected.append(episode)
            bar.update(1)
            if len(collected) == episodes + num_val:
                break

    train = _concat(collected[:episodes])
    val = _concat(collected[episodes:])
    # The validation file is committed first (the inner block), so a present training file implies its partner.
    with atomic_file(train_path) as train_handle:
        _savez_reproducibly(train_handle, train)
        with atomic_file(val_path) as val_handle:
            _savez_reproducibly(val_handle, val)
    return train_path, val_path


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

_TASK_PATTERN = re.compile(r"^(?P<dataset>.+)-singletask(?:-task(?P<task_id>\d+))?$")


def parse_ogbench_task(task: str) -> tuple[str, int | None]:
    """Split 'cube-single-play-singletask-task1' into ('cube-single-play', 1).

    The task id is None for the default task ('cube-single-play-singletask'). A trailing '-v0' is
    tolerated. Raises `DatasetError` for names that are not OGBench single-task play tasks.
    """
    name = str(task)
    if name.endswith("-v0"):
        name = name[: -len("-v0")]
    match = _TASK_PATTERN.match(name)
    if match is None:
        raise DatasetError(
            f"not an OGBench single-task name: {task!r}; expected '<dataset>-singletask[-taskN]' "
            f"with <dataset> one of: {_valid_names()} (e.g. 'cube-single-play-singletask-task1')"
        )
    dataset_name = match.group("dataset")
    if dataset_name not in OGBENCH_PLAY_DATASETS:
        raise DatasetError(
            f"unknown OGBench dataset {dataset_name!r} in task {task!r}; valid datasets: {_valid_names()}"
        )
    task_id = match.group("task_id")
    if task_id is not None:
        task_id = int(task_id)
        if not 1 <= task_id <= NUM_OGBENCH_TASKS:
            raise DatasetError(f"task {task!r}: task id must be 1..{NUM_OGBENCH_TASKS}, got {task_id}")
    return dataset_name, task_id


def load_ogbench_task(task: str, data_dir, *, strict: bool = False) -> tuple[Dataset, Dataset]:
    """(train, val) datasets of an OGBench single-task problem, from locally generated files.

    Rewards and masks are OGBench's own single-task relabelling. Never downloads: a missing file
    raises `DatasetError` telling how to generate it. Both files are checked first (`check_file`), so
    errors and the warning about actions outside [-1, 1] (clipped, or refused with `strict=True`)
    give row indices of the file.
    """
    dataset_name, task_id = parse_ogbench_task(task)
    canonical = f"{dataset_name}-singletask" + ("" if task_id is None else f"-task{task_id}")
    train_path = ogbench_dataset_path(data_dir, dataset_name)
    val_path = ogbench_val_path(train_path)
    for path in (train_path, val_path):
        if not path.is_file():
            raise DatasetError(
                f"{path}: dataset file for task {canonical!r} not found; generate it with: "
                f"vgf data make {dataset_name} --out {Path(data_dir).expanduser()}"
            )
    if ".npz" in str(train_path.parent):
        # OGBench derives the validation path with str.replace('.npz', '-val.npz') on the whole path.
        raise DatasetError(
            f"{train_path}: the data directory name must not contain '.npz' (OGBench's loader would "
            "derive a wrong validation path)"
        )

    for path in (train_path, val_path):
        check_file(path, strict=strict)

    ogbench = _import_ogbench()
    try:
        with _quiet_env_warnings():
            env, train, val = ogbench.make_env_and_datasets(f"{canonical}-v0", dataset_path=str(train_path))
    except Exception as exc:  # a malformed file surfaces as KeyError/ValueError/AssertionError inside OGBench
        raise DatasetError(f"{train_path}: OGBench could not load the dataset for {canonical!r}: {exc!r}") from exc
    env.close()
    for split in (train, val):  # out-of-box actions were reported (or refused) by check_file above
        split["actions"] = np.clip(split["actions"], *DEFAULT_ACTION_BOUNDS)
    return (
        Dataset.from_arrays(train, source=f"{train_path} [{canonical}]"),
        Dataset.from_arrays(val, source=f"{val_path} [{canonical}]"),
    )
