"""Offline datasets: the `Dataset` container, loaders (OGBench, D4RL HDF5, bandit) and file checks.

Nothing in this package downloads data. OGBench play datasets are generated locally with
`generate_ogbench_dataset` (CLI: `vgf data make`) and read back through OGBench's own loader.
"""

from __future__ import annotations

from pathlib import Path

from vgf.data.bandit import make_bandit_dataset
from vgf.data.check import check_file
from vgf.data.d4rl import load_d4rl_hdf5
from vgf.data.dataset import Dataset, DatasetError
from vgf.data.ogbench_data import (
    OGBENCH_PLAY_DATASETS,
    generate_ogbench_dataset,
    load_ogbench_task,
    ogbench_dataset_path,
    ogbench_val_path,
    parse_ogbench_task,
)

__all__ = [
    "Dataset",
    "DatasetError",
    "OGBENCH_PLAY_DATASETS",
    "check_file",
    "generate_ogbench_dataset",
    "load_d4rl_hdf5",
    "load_ogbench_task",
    "load_task_dataset",
    "make_bandit_dataset",
    "ogbench_dataset_path",
    "ogbench_val_path",
    "parse_ogbench_task",
]


def load_task_dataset(task: str, data_dir=None) -> Dataset:
    """The training dataset for a task name.

    'bandit' -> `make_bandit_dataset()`; an OGBench single-task name such as
    'cube-single-play-singletask-task1' -> `load_ogbench_task(task, data_dir)[0]`; a path ending in
    .hdf5/.h5 -> `load_d4rl_hdf5(task)`.
    """
    task = str(task)
    if task == "bandit":
        return make_bandit_dataset()
    if task.lower().endswith((".hdf5", ".h5")):
        return load_d4rl_hdf5(task)
    try:
        parse_ogbench_task(task)
    except DatasetError as exc:
        raise DatasetError(f"{exc}. Other valid task names: 'bandit', or a D4RL file path ending in .hdf5/.h5") from exc
    if data_dir is None:
        raise DatasetError(f"task {task!r}: a data directory is needed to load OGBench datasets (data_dir=None)")
    return load_ogbench_task(task, Path(data_dir))[0]
