"""Offline datasets: the `Dataset` container, loaders (OGBench, D4RL HDF5, Minari, bandit) and file checks.

Nothing in this package downloads data. OGBench play datasets are generated locally with
`generate_ogbench_dataset` (CLI: `vgf data make`) and read back through OGBench's own loader; D4RL files
and Minari datasets are read from where the user put them.
"""

from __future__ import annotations

from pathlib import Path

from vgf.data.bandit import make_bandit_dataset
from vgf.data.check import check_file
from vgf.data.d4rl import REWARD_TRANSFORMS, load_d4rl_hdf5
from vgf.data.d4rl_scores import D4RL_REFERENCE_RETURNS, d4rl_normalized_score
from vgf.data.dataset import DEFAULT_ACTION_BOUNDS, Dataset, DatasetError
from vgf.data.minari_data import list_local_minari_datasets, load_minari
from vgf.data.ogbench_data import (
    OGBENCH_PLAY_DATASETS,
    generate_ogbench_dataset,
    load_ogbench_task,
    ogbench_dataset_path,
    ogbench_val_path,
    parse_ogbench_task,
)

__all__ = [
    "D4RL_REFERENCE_RETURNS",
    "DEFAULT_ACTION_BOUNDS",
    "Dataset",
    "DatasetError",
    "MINARI_PREFIX",
    "OGBENCH_PLAY_DATASETS",
    "REWARD_TRANSFORMS",
    "check_file",
    "d4rl_normalized_score",
    "generate_ogbench_dataset",
    "list_local_minari_datasets",
    "load_d4rl_hdf5",
    "load_minari",
    "load_ogbench_task",
    "load_task_dataset",
    "load_task_datasets",
    "make_bandit_dataset",
    "ogbench_dataset_path",
    "ogbench_val_path",
    "parse_ogbench_task",
]

MINARI_PREFIX = "minari:"  # task names 'minari:<dataset id>' read a local Minari dataset


def load_task_dataset(task: str, data_dir=None, *, strict: bool = False) -> Dataset:
    """The training dataset for a task name (see `load_task_datasets`)."""
    return load_task_datasets(task, data_dir, strict=strict)[0]


def load_task_datasets(task: str, data_dir=None, *, strict: bool = False) -> tuple[Dataset, Dataset | None]:
    """(training, validation) datasets for a task name; validation is None where the source has no held-out split.

    'bandit' -> `make_bandit_dataset()`; an OGBench single-task name such as
    'cube-single-play-singletask-task1' -> `load_ogbench_task(task, data_dir)` (train and its -val file); a path
    ending in .hdf5/.h5 -> `load_d4rl_hdf5(task)`; 'minari:<dataset id>' -> `load_minari(id, root=data_dir)`
    (data_dir None: `$MINARI_DATASETS_PATH` or `~/.minari/datasets`). `strict=True` refuses actions
    outside the action box instead of clipping them with a warning.
    """
    task = str(task)
    if task == "bandit":
        return make_bandit_dataset(), None
    if task.lower().endswith((".hdf5", ".h5")):
        return load_d4rl_hdf5(task, strict=strict), None
    if task.startswith(MINARI_PREFIX):
        return load_minari(task[len(MINARI_PREFIX) :], root=data_dir, strict=strict), None
    try:
        parse_ogbench_task(task)
    except DatasetError as exc:
        raise DatasetError(
            f"{exc}. Other valid task names: 'bandit', a D4RL file path ending in .hdf5/.h5, "
            f"or '{MINARI_PREFIX}<local Minari dataset id>'"
        ) from exc
    if data_dir is None:
        raise DatasetError(f"task {task!r}: a data directory is needed to load OGBench datasets (data_dir=None)")
    return load_ogbench_task(task, Path(data_dir), strict=strict)
