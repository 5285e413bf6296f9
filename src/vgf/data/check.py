"""`vgf data check FILE`: validate a data file before training on it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vgf.data.d4rl import d4rl_to_dataset, is_antmaze, read_d4rl_arrays
from vgf.data.dataset import DatasetError, check_array_set, count_outside_action_box, enforce_action_box
from vgf.envs.ogbench_envs import OGBENCH_PLAY_DATASETS

__all__ = ["check_file"]

_NPZ_REQUIRED = ("observations", "actions", "terminals")
_HDF5_SUFFIXES = (".hdf5", ".h5")


def _check_action_box(path: Path, actions: np.ndarray, strict: bool) -> tuple[dict, np.ndarray]:
    """(summary of the action range and [-1, 1] violations, the actions clipped as the loaders clip them).

    Violations are warned about, or raise when `strict`, exactly as when the file is loaded.
    """
    outside, first_outside = count_outside_action_box(actions)
    clipped = enforce_action_box(actions, str(path), strict=strict)
    summary = {
        "action_range": (float(actions.min()), float(actions.max())),
        "actions_outside_box": outside,
        "first_action_outside_box": first_outside,
    }
    return summary, clipped


def _check_npz(path: Path, strict: bool) -> dict:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as .npz ({exc})") from exc
    with archive:
        keys = sorted(archive.files)
        try:
            arrays = {key: archive[key] for key in keys}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(f"{path}: cannot read the arrays ({exc})") from exc

    numeric = tuple(key for key in keys if key not in _NPZ_REQUIRED
                    and (np.issubdtype(arrays[key].dtype, np.number) or arrays[key].dtype == np.bool_))
    checked = check_array_set(arrays, str(path), required=_NPZ_REQUIRED, optional=numeric,
                              matrices=("observations", "actions"), vectors=("terminals",), flags=("terminals",),
                              squeeze=False)  # OGBench's loader reads the file itself: [N, 1] terminals break it
    observations, actions, flags = checked["observations"], checked["actions"], checked["terminals"].astype(bool)
    rows = int(flags.shape[0])
    episodes = int(flags.sum())
    if episodes == 0:
        raise DatasetError(f"{path}: key 'terminals' has no True entry, so no episode ever ends ({rows} steps)")
    if not flags[-1]:
        raise DatasetError(
            f"{path}: key 'terminals' is False at the last index {rows - 1}; the final episode is cut off "
            "(OGBench's loader needs every episode, including the last, to end with a terminal step)"
        )
    action_box, _ = _check_action_box(path, actions, strict)

    summary = {
        "format": "ogbench-npz",
        "path": str(path),
        "transitions": rows - episodes,  # what OGBench's loader yields: the last step of an episode starts none
        "steps": rows,
        "episodes": episodes,
        "obs_dim": int(observations.shape[1]),
        "action_dim": int(actions.shape[1]),
        "keys": keys,
        **action_box,
    }
    if not path.name.endswith("-val.npz"):
        val_path = path.with_name(path.name[: -len(".npz")] + "-val.npz")
        summary["val_file"] = str(val_path) if val_path.is_file() else None
    return summary


def _check_hdf5(path: Path, strict: bool) -> dict:
    import h5py

    arrays = read_d4rl_arrays(path)
    action_box, arrays["actions"] = _check_action_box(path, arrays["actions"], strict)
    dataset = d4rl_to_dataset(arrays, source=str(path))
    with h5py.File(path, "r") as handle:  # where it came from (`vgf data make` writes these)
        provenance = {key: value.item() if hasattr(value, "item") else value for key, value in handle.attrs.items()}
    return {
        "format": "d4rl-hdf5",
        "path": str(path),
        "transitions": dataset.size,
        "rows": int(arrays["observations"].shape[0]),
        "episodes": int(dataset.terminals.sum()),
        "obs_dim": dataset.obs_dim,
        "action_dim": dataset.action_dim,
        "keys": sorted(arrays),
        **action_box,
        "has_timeouts": "timeouts" in arrays,
        "has_next_observations": "next_observations" in arrays,
        "default_reward_transform": "antmaze (r - 1)" if is_antmaze(path.name) else "none",
        "content_sha256": dataset.content_sha256(),  # what a run trained on it records as dataset.sha256
        **({"attributes": provenance} if provenance else {}),
    }


def check_file(path, *, strict: bool = False) -> dict:
    """Validate an OGBench-format `.npz` or a D4RL `.hdf5`/`.h5` file; return a summary dict.

    Raises `DatasetError` with the reason when the file is missing, unreadable or inconsistent. Action
    values outside [-1, 1] are counted in the summary ('actions_outside_box', 'first_action_outside_box')
    with a warning, or raise with `strict=True`. Only reads the file.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".npz",) + _HDF5_SUFFIXES:
        raise DatasetError(
            f"{path}: unknown data file extension {path.suffix!r}; expected .npz (OGBench) or .hdf5/.h5 (D4RL)"
        )
    if not path.is_file():
        hint = ""
        if suffix == ".npz":
            stem = path.name[: -len(".npz")]
            stem = stem[: -len("-val")] if stem.endswith("-val") else stem
            stem = stem[: -len("-v0")] if stem.endswith("-v0") else stem
            if stem in OGBENCH_PLAY_DATASETS:
                hint = f"; generate it with: vgf data make {stem} --out {path.parent}"
        raise DatasetError(f"{path}: file not found{hint}")
    if suffix == ".npz":
        return _check_npz(path, strict)
    return _check_hdf5(path, strict)
