"""Loading D4RL-layout HDF5 files (observations, actions, rewards, terminals, timeouts, ...).

These are the files of the D4RL mirrors: one top-level HDF5 dataset per key, one row per environment step.
Reference returns for D4RL's normalised score live in `vgf.data.d4rl_scores`.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from vgf.data.dataset import RETURN_RANGE, Dataset, DatasetError, check_array_set, enforce_action_box

__all__ = [
    "D4RL_REQUIRED_KEYS",
    "REWARD_TRANSFORMS",
    "d4rl_to_dataset",
    "is_antmaze",
    "load_d4rl_hdf5",
    "read_d4rl_arrays",
    "scale_rewards_by_return_range",
]

D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
_OPTIONAL_KEYS = ("timeouts", "next_observations")

# 'auto': the AntMaze shift for AntMaze data, rewards as stored otherwise. 'none': as stored.
# 'antmaze': r - 1. 'locomotion': r * 1000 / (max episode return - min episode return).
REWARD_TRANSFORMS = ("auto", "none", "antmaze", "locomotion")


def read_d4rl_arrays(path) -> dict[str, np.ndarray]:
    """Read the D4RL top-level datasets of an HDF5 file, checked; raises `DatasetError`.

    Checks: required keys present, shapes ([N, dim] or [N]/[N, 1]), equal lengths, at least one row,
    numeric dtypes, no NaN/inf (index = file row), terminals/timeouts 0/1 (returned as bool).
    """
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open as HDF5 ({exc})") from exc
    with handle:
        present = sorted(handle.keys())
        missing = [key for key in D4RL_REQUIRED_KEYS if key not in handle]
        if missing:
            raise DatasetError(
                f"{path}: missing required key(s) {', '.join(repr(k) for k in missing)}; found keys: {present}"
            )
        arrays = {}
        for key in D4RL_REQUIRED_KEYS + _OPTIONAL_KEYS:
            if key not in handle:
                continue
            item = handle[key]
            if not isinstance(item, h5py.Dataset):
                raise DatasetError(f"{path}: key '{key}' is an HDF5 group, expected an array")
            arrays[key] = item[()]

    arrays = check_array_set(arrays, str(path), required=D4RL_REQUIRED_KEYS, optional=_OPTIONAL_KEYS,
                             matrices=("observations", "actions", "next_observations"),
                             vectors=("rewards", "terminals", "timeouts"), flags=("terminals", "timeouts"))
    for key in ("terminals", "timeouts"):
        if key in arrays:
            arrays[key] = arrays[key].astype(bool)
    return arrays


def d4rl_to_dataset(arrays: dict[str, np.ndarray], source: str) -> Dataset:
    """Turn D4RL arrays (as from `read_d4rl_arrays`) into a `Dataset`.

    An episode ends at `terminals | timeouts` (and at the end of the file). With `next_observations`
    stored, every row is kept. Without, s' is the next row of the same episode; a row that ends its
    episode by time-out (or by the end of the file) has no successor and is dropped, while a true
    terminal row is kept (its s' is never bootstrapped from: it is set to s). `masks = 1 - terminals`;
    `Dataset.terminals` marks the last kept transition of every episode.
    """
    observations = arrays["observations"]
    size = observations.shape[0]
    true_terminal = arrays["terminals"].astype(bool)
    if "timeouts" in arrays:
        timeouts = arrays["timeouts"].astype(bool)
    else:
        timeouts = np.zeros(size, dtype=bool)
        if "next_observations" not in arrays:
            warnings.warn(
                f"{source}: no 'timeouts' key; episodes are split at terminals only, so consecutive "
                "time-limited episodes will be chained together",
                stacklevel=3,
            )
    episode_end = true_terminal | timeouts
    episode_end[-1] = True

    if "next_observations" in arrays:
        keep = np.arange(size)
        next_observations = arrays["next_observations"]
        boundary = episode_end
    else:
        keep_mask = ~episode_end | true_terminal
        keep = np.flatnonzero(keep_mask)
        if len(keep) == 0:
            raise DatasetError(
                f"{source}: no transitions left after pairing rows with their successors "
                f"({size} rows, every one ending an episode by time-out); store 'next_observations' instead"
            )
        successor = np.minimum(keep + 1, size - 1)
        next_observations = np.where(true_terminal[keep, None], observations[keep], observations[successor])
        episode_id = np.concatenate([[0], np.cumsum(episode_end[:-1])])[keep]
        boundary = np.ones(len(keep), dtype=bool)
        boundary[:-1] = episode_id[1:] != episode_id[:-1]

    terminals_kept = true_terminal[keep]
    return Dataset.from_arrays(
        {
            "observations": observations[keep],
            "actions": arrays["actions"][keep],
            "rewards": arrays["rewards"][keep],
            "next_observations": next_observations,
            "masks": 1.0 - terminals_kept.astype(np.float32),
            "terminals": boundary.astype(np.float32),
        },
        source=source,
    )


def is_antmaze(name: str) -> bool:
    """Whether a D4RL dataset name or file name is AntMaze ('antmaze-umaze-v2', 'Ant_maze_u-maze_...hdf5')."""
    return "antmaze" in str(name).lower().replace("_", "")


def scale_rewards_by_return_range(dataset: Dataset, target_range: float = RETURN_RANGE) -> Dataset:
    """`dataset` with rewards scaled so its episode returns span `target_range` (`Dataset.return_range_scale`)."""
    rewards = (dataset.rewards * dataset.return_range_scale(target_range)).astype(np.float32)
    return dataclasses.replace(dataset, rewards=rewards)


def load_d4rl_hdf5(path, *, task: str | None = None, reward_transform: str = "auto", strict: bool = False) -> Dataset:
    """Load a D4RL-layout HDF5 file as a `Dataset` (see `d4rl_to_dataset` for the episode handling).

    `task`: the D4RL dataset name (e.g. 'antmaze-umaze-v2'); by default the file name stands for it.
    `reward_transform`: one of `REWARD_TRANSFORMS`. 'auto' applies the AntMaze shift r - 1 when the task
    (or file name) is AntMaze and keeps the stored rewards otherwise; 'locomotion' (opt-in) scales them
    by 1000 / (max - min episode return). Actions outside [-1, 1] are clipped with a warning naming the
    file row, or refused with `strict=True`. Raises `DatasetError` for anything missing or malformed.
    """
    if reward_transform not in REWARD_TRANSFORMS:
        raise DatasetError(f"unknown reward_transform {reward_transform!r}; valid: {', '.join(REWARD_TRANSFORMS)}")
    path = Path(path).expanduser()
    source = str(path)
    arrays = read_d4rl_arrays(path)
    arrays["actions"] = enforce_action_box(arrays["actions"], source, strict=strict)
    dataset = d4rl_to_dataset(arrays, source=source)

    if reward_transform == "auto":
        reward_transform = "antmaze" if is_antmaze(task if task is not None else path.name) else "none"
    if reward_transform == "antmaze":
        return dataclasses.replace(dataset, rewards=dataset.rewards - np.float32(1.0))
    if reward_transform == "locomotion":
        return scale_rewards_by_return_range(dataset)
    return dataset
