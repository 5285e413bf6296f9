"""Minari datasets already in the user's local Minari directory, read through the `minari` package.

Nothing here downloads: a dataset that is not on disk is an error that lists the local ones. The
directory is `root` when given, else `$MINARI_DATASETS_PATH`, else `~/.minari/datasets` (Minari's own
default), and it is only read: nothing is created in it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from vgf.data.dataset import DEFAULT_ACTION_BOUNDS, Dataset, DatasetError, check_finite

__all__ = ["list_local_minari_datasets", "load_minari", "minari_root"]

_METADATA_FILE = "metadata.json"  # Minari keeps it in <root>/<dataset id>/data/


def minari_root(root=None) -> Path:
    """The local Minari directory: `root`, else `$MINARI_DATASETS_PATH`, else `~/.minari/datasets`."""
    if root is not None:
        return Path(root).expanduser()
    from_env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(from_env).expanduser() if from_env else Path.home() / ".minari" / "datasets"


def list_local_minari_datasets(root=None) -> list[str]:
    """Ids ('namespace/name-vN') of the datasets stored under the local Minari directory, sorted."""
    base = minari_root(root)
    if not base.is_dir():
        return []
    return sorted(path.parent.parent.relative_to(base).as_posix() for path in base.glob(f"**/data/{_METADATA_FILE}"))


def _flatten_observations(space, values, source: str) -> np.ndarray:
    """[T, dim] float array from one episode's observations: Box as is, Dict/Tuple of Boxes concatenated."""
    import gymnasium.spaces as spaces

    if isinstance(space, spaces.Box):
        array = np.asarray(values)
        return array.reshape(array.shape[0], -1)
    if isinstance(space, spaces.Dict):  # in the space's key order, as gymnasium.spaces.flatten does
        parts = [_flatten_observations(sub, values[key], f"{source} key {key!r}") for key, sub in space.spaces.items()]
        return np.concatenate(parts, axis=1)
    if isinstance(space, spaces.Tuple):
        parts = [_flatten_observations(sub, values[i], f"{source} item {i}") for i, sub in enumerate(space.spaces)]
        return np.concatenate(parts, axis=1)
    raise DatasetError(
        f"{source}: observation space {space} is not supported; vgf needs real-valued observations "
        "(a Box, or a Dict/Tuple of Boxes, which is flattened)"
    )


def _episode_arrays(episode, observation_space, source: str) -> dict[str, np.ndarray] | None:
    """The transitions of one Minari episode (T steps, T + 1 observations), or None when it has no step."""
    where = f"{source} episode {episode.id}"
    observations = _flatten_observations(observation_space, episode.observations, where)
    actions = np.asarray(episode.actions)
    rewards = np.asarray(episode.rewards, dtype=np.float64)
    steps = len(rewards)
    lengths = {
        "observations": observations.shape[0],
        "actions": actions.shape[0],
        "rewards": steps,
        "terminations": len(episode.terminations),
    }
    if lengths["observations"] != steps + 1 or len({lengths["actions"], steps, lengths["terminations"]}) != 1:
        listing = ", ".join(f"{key}={count}" for key, count in lengths.items())
        raise DatasetError(f"{where}: expected T + 1 observations and T of everything else, got {listing}")
    if steps == 0:
        return None
    check_finite(where, "observations", observations)  # all T + 1, the last one only appears as an s'
    check_finite(where, "actions", actions)
    check_finite(where, "rewards", rewards)
    arrays = {
        "observations": observations[:-1],
        "actions": actions.reshape(steps, -1),
        "rewards": rewards,
        "next_observations": observations[1:],
        "masks": 1.0 - np.asarray(episode.terminations, dtype=np.float32),
        "terminals": np.zeros(steps, dtype=np.float32),
    }
    arrays["terminals"][-1] = 1.0  # each episode is its own trajectory: no transition crosses its end
    return arrays


def load_minari(dataset_id: str, root=None, *, strict: bool = False) -> Dataset:
    """A local Minari dataset as flat transitions; never downloads.

    Each episode of T steps gives T transitions (s_t, a_t, r_t, s_t+1) with `masks = 1 - terminations`;
    its last transition ends a trajectory. Dict/Tuple observations of Boxes are flattened (key order of the
    observation space); other spaces, and non-Box action spaces, are refused. Actions outside the
    dataset's action space are clipped with a warning, or refused with `strict=True`. Errors
    (`DatasetError`) name the dataset directory, the episode and the key.
    """
    base = minari_root(root)
    if not base.is_dir():
        raise DatasetError(
            f"{base}: no local Minari directory there (pass root= or set MINARI_DATASETS_PATH); "
            f"Minari dataset {dataset_id!r} cannot be read and nothing is downloaded"
        )
    data_path = base / dataset_id / "data"
    if not (data_path / _METADATA_FILE).is_file():
        local = list_local_minari_datasets(base)
        raise DatasetError(
            f"Minari dataset {dataset_id!r} is not in the local Minari directory {base}; local datasets: "
            f"{', '.join(local) if local else '(none)'}. Nothing is downloaded: fetch it yourself first "
            f"(`minari download {dataset_id}`) or pass the right root"
        )
    source = f"minari:{dataset_id} ({data_path})"

    import gymnasium.spaces as spaces
    import minari

    try:
        dataset = minari.MinariDataset(data_path)
        observation_space, action_space = dataset.observation_space, dataset.action_space
        episodes = list(dataset.iterate_episodes())
    except Exception as exc:  # Minari raises ValueError/KeyError/OSError from its storage backends
        raise DatasetError(f"{source}: Minari could not read the dataset ({exc!r})") from exc

    if not isinstance(action_space, spaces.Box):
        raise DatasetError(f"{source}: action space {action_space} is not a Box; vgf needs continuous actions")
    parts = [arrays for episode in episodes if (arrays := _episode_arrays(episode, observation_space, source))]
    if not parts:
        raise DatasetError(f"{source}: dataset is empty ({len(episodes)} episode(s), no steps)")
    arrays = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    bounds = (action_space.low, action_space.high)
    default_low, default_high = DEFAULT_ACTION_BOUNDS
    if not (np.all(action_space.low == default_low) and np.all(action_space.high == default_high)):
        warnings.warn(
            f"{source}: action space is {action_space}, not [-1, 1]; vgf's agents sample and clip actions to "
            "[-1, 1], so rescale the actions (and the environment) to [-1, 1] before training on them",
            UserWarning,
            stacklevel=2,
        )
    return Dataset.from_arrays(arrays, source=source, strict=strict, action_bounds=bounds)
