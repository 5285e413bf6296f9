"""Tests for the data layer `vgf.data` (no network: all OGBench files are generated here, tiny)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import vgf.data as data
from vgf.data import (
    OGBENCH_PLAY_DATASETS,
    Dataset,
    DatasetError,
    check_file,
    generate_ogbench_dataset,
    load_d4rl_hdf5,
    load_ogbench_task,
    load_task_dataset,
    make_bandit_dataset,
    ogbench_dataset_path,
)
from vgf.envs import bandit as bandit_env

EPISODES = 2
STEPS = 60


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to download (OGBench's downloader or raw urllib) fails the test."""
    import ogbench.utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(ogbench.utils, "download_datasets", refuse)


def _generate(name, out_dir, episodes=EPISODES, steps=STEPS, seed=0):
    return generate_ogbench_dataset(name, out_dir, episodes=episodes, max_episode_steps=steps, seed=seed, progress=False)


@pytest.fixture(scope="module")
def cube_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("cube")
    return _generate("cube-single-play", out)


@pytest.fixture(scope="module")
def puzzle_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("puzzle")
    return _generate("puzzle-3x3-play", out)


def _load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


# ------------------------------------------------------------------------------------------------
# OGBench generation and loading
# ------------------------------------------------------------------------------------------------


def test_generated_file_layout(cube_files):
    train_path, val_path = cube_files
    assert train_path == ogbench_dataset_path(train_path.parent, "cube-single-play")
    assert train_path.name == "cube-single-play-v0.npz"
    assert val_path.name == "cube-single-play-v0-val.npz"
    # Written atomically: nothing but the two files is left in the directory.
    assert sorted(p.name for p in train_path.parent.iterdir()) == sorted([train_path.name, val_path.name])

    train, val = _load_npz(train_path), _load_npz(val_path)
    assert set(train) == {"observations", "actions", "terminals", "qpos", "qvel"}
    assert train["observations"].dtype == np.float32 and train["actions"].dtype == np.float32
    assert train["qpos"].dtype == np.float32 and train["qvel"].dtype == np.float32
    assert train["terminals"].dtype == np.bool_
    assert train["observations"].shape == (EPISODES * STEPS, 28)
    assert train["actions"].shape == (EPISODES * STEPS, 5)
    assert train["qpos"].shape[0] == EPISODES * STEPS
    assert np.flatnonzero(train["terminals"]).tolist() == [STEPS - 1, 2 * STEPS - 1]
    assert val["observations"].shape == (STEPS, 28)  # max(1, 2 // 10) = 1 validation episode
    assert np.flatnonzero(val["terminals"]).tolist() == [STEPS - 1]
    assert np.abs(train["actions"]).max() <= 1.0
    assert np.abs(train["actions"]).max() > 0.05  # the oracle actually moves the arm
    # qpos is the state *before* each step, so the arm joints move between consecutive stored steps.
    assert not np.allclose(train["qpos"][1:STEPS, :6], train["qpos"][: STEPS - 1, :6])


def test_parallel_generation_writes_the_serial_files_byte_for_byte(tmp_path, cube_files):
    """Episodes collected by two worker processes, out of order, give exactly the bytes of one process's files."""
    serial = generate_ogbench_dataset("cube-single-play", tmp_path / "serial", episodes=3, max_episode_steps=STEPS,
                                      seed=4, progress=False, workers=0)
    parallel = generate_ogbench_dataset("cube-single-play", tmp_path / "parallel", episodes=3, max_episode_steps=STEPS,
                                        seed=4, progress=False, workers=2)
    for ours, theirs in zip(serial, parallel):
        assert ours.read_bytes() == theirs.read_bytes()
    assert serial[0].read_bytes() != cube_files[0].read_bytes()  # another seed: other episodes


@pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")
def test_roundtrip_through_ogbench_loader(cube_files):
    import ogbench

    train_path, _ = cube_files
    env, train, val = ogbench.make_env_and_datasets(
        "cube-single-play-singletask-task1-v0", dataset_path=str(train_path)
    )
    env.close()
    for split, rows in ((train, EPISODES * (STEPS - 1)), (val, STEPS - 1)):
        assert {"rewards", "masks", "next_observations"} <= set(split)
        assert split["observations"].shape == (rows, 28)
        assert split["rewards"].shape == (rows,) and split["masks"].shape == (rows,)
        assert set(np.unique(split["rewards"])) <= {-1.0, 0.0}

    ours_train, ours_val = load_ogbench_task("cube-single-play-singletask-task1", train_path.parent)
    assert isinstance(ours_train, Dataset)
    assert ours_train.size == EPISODES * (STEPS - 1) and ours_val.size == STEPS - 1
    assert ours_train.obs_dim == 28 and ours_train.action_dim == 5
    np.testing.assert_array_equal(ours_train.observations, train["observations"])
    np.testing.assert_array_equal(ours_train.next_observations, train["next_observations"])
    np.testing.assert_array_equal(ours_train.rewards, train["rewards"])
    np.testing.assert_array_equal(ours_train.masks, train["masks"])
    np.testing.assert_array_equal(ours_val.rewards, val["rewards"])
    # terminals mark the last transition of each episode.
    assert np.flatnonzero(ours_train.terminals).tolist() == [STEPS - 2, 2 * (STEPS - 1) - 1]
    assert set(ours_train.arrays()) == {"observations", "actions", "rewards", "next_observations", "masks", "terminals"}
    assert all(v.dtype == np.float32 for v in ours_train.arrays().values())


def test_default_task_via_load_task_dataset(cube_files):
    train_path, _ = cube_files
    ds = load_task_dataset("cube-single-play-singletask", train_path.parent)
    assert ds.size == EPISODES * (STEPS - 1)
    assert "cube-single-play-singletask" in ds.source


def test_puzzle_roundtrip_with_button_states(puzzle_files):
    train_path, val_path = puzzle_files
    raw = _load_npz(train_path)
    assert raw["button_states"].dtype == np.int64 and raw["button_states"].shape == (EPISODES * STEPS, 9)
    assert set(np.unique(raw["button_states"])) <= {0, 1}
    assert "button_states" in _load_npz(val_path)

    # load_ogbench_task goes through ogbench.make_env_and_datasets, whose puzzle relabelling reads button_states.
    ours, ours_val = load_ogbench_task("puzzle-3x3-play-singletask-task1", train_path.parent)
    assert ours.size == EPISODES * (STEPS - 1) and ours_val.size == STEPS - 1 and ours.obs_dim == 55
    # puzzle-3x3 task rewards count unsolved buttons: within [-9, 0], and a random board is not solved.
    assert ours.rewards.min() >= -9 and ours.rewards.max() < 0
    np.testing.assert_array_equal(ours.masks, np.ones_like(ours.masks))


@pytest.mark.parametrize("name", ["cube-single-play", "puzzle-3x3-play"])
def test_generation_is_reproducible(name, cube_files, puzzle_files, tmp_path):
    # Each episode is seeded from (seed, episode index) alone, so a one-episode run with the fixture's seed
    # must reproduce the fixture's first episode (train) and second episode (its validation split).
    fixture_train = _load_npz((cube_files if name.startswith("cube") else puzzle_files)[0])
    np.random.seed(1234)
    global_state = np.random.get_state()[1].copy()
    train_path, val_path = _generate(name, tmp_path / "again", episodes=1, seed=0)
    again = {"train": _load_npz(train_path), "val": _load_npz(val_path)}
    assert set(again["train"]) == set(fixture_train)
    for split, rows in (("train", slice(0, STEPS)), ("val", slice(STEPS, 2 * STEPS))):
        for key, value in fixture_train.items():
            np.testing.assert_array_equal(again[split][key], value[rows], err_msg=f"{name} {split}: {key} differs")
    # the caller's global numpy random state is left as it was
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)

    other, _ = _generate(name, tmp_path / "other", episodes=1, steps=10, seed=1)
    assert not np.array_equal(_load_npz(other)["observations"], fixture_train["observations"][:10])


def test_scene_generation_is_reproducible(tmp_path):
    first, _ = _generate("scene-play", tmp_path / "a", episodes=1, steps=40, seed=5)
    second, _ = _generate("scene-play", tmp_path / "b", episodes=1, steps=40, seed=5)
    a, b = _load_npz(first), _load_npz(second)
    assert a["button_states"].shape == (40, 2) and a["button_states"].dtype == np.int64
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"scene-play: {key} differs for the same seed")


def test_missing_ogbench_file_explains_how_to_make_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_ogbench_task("scene-play-singletask-task3", tmp_path)
    message = str(info.value)
    assert "not found" in message
    assert f"vgf data make scene-play --out {tmp_path}" in message
    assert str(tmp_path / "scene-play-v0.npz") in message


def test_missing_val_file_is_reported(cube_files, tmp_path):
    train_path, _ = cube_files
    (tmp_path / train_path.name).write_bytes(train_path.read_bytes())
    with pytest.raises(DatasetError, match="cube-single-play-v0-val.npz.*not found"):
        load_ogbench_task("cube-single-play-singletask-task1", tmp_path)


@pytest.mark.parametrize(
    "task, fragment",
    [
        ("cube-quadruple-play-singletask-task1", "cube-single-play, cube-double-play"),
        ("antmaze-large-navigate-singletask-task1", "valid datasets"),
        ("cube-single-play-singletask-task9", "task id must be 1..5"),
        ("cube-single-play", "expected '<dataset>-singletask"),
    ],
)
def test_unknown_ogbench_task(task, fragment, tmp_path):
    with pytest.raises(DatasetError, match=fragment.replace(".", r"\.")):
        load_ogbench_task(task, tmp_path)


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="valid datasets: .*puzzle-3x3-play"):
        generate_ogbench_dataset("cube-quintuple-play", tmp_path, episodes=1, max_episode_steps=10, progress=False)
    with pytest.raises(DatasetError, match="max_episode_steps"):
        generate_ogbench_dataset("cube-single-play", tmp_path, episodes=1, max_episode_steps=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_required_play_datasets_listed():
    for name in ("cube-single-play", "cube-double-play", "scene-play", "puzzle-3x3-play"):
        assert name in OGBENCH_PLAY_DATASETS
    assert OGBENCH_PLAY_DATASETS["cube-single-play"] == "cube-single-v0"


def test_no_display_warning_when_headless():
    """Importing the data layer and OGBench on a display-less machine prints no GLFW/X11 warning."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    code = (
        "from vgf.data.ogbench_data import _import_ogbench; _import_ogbench(); import gymnasium; "
        "env = gymnasium.make('puzzle-3x3-v0', terminate_at_goal=False, mode='data_collection'); env.reset(seed=0)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DISPLAY" not in result.stderr and "GLFW" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------
# Dataset.from_arrays
# ------------------------------------------------------------------------------------------------


def _arrays(n=6, obs_dim=3, action_dim=2):
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[-1] = 1.0
    return {
        "observations": rng.normal(size=(n, obs_dim)),
        "actions": rng.uniform(-1, 1, size=(n, action_dim)),
        "rewards": rng.normal(size=n),
        "next_observations": rng.normal(size=(n, obs_dim)),
        "terminals": terminals,
    }


def test_from_arrays_converts_and_defaults_masks():
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:, None]  # [N, 1] is accepted
    ds = Dataset.from_arrays(arrays, source="unit")
    assert ds.size == 6 and ds.obs_dim == 3 and ds.action_dim == 2 and len(ds) == 6
    assert ds.rewards.shape == (6,)
    assert all(v.dtype == np.float32 for v in ds.arrays().values())
    np.testing.assert_array_equal(ds.masks, 1.0 - arrays["terminals"])
    np.testing.assert_allclose(ds.observations, arrays["observations"].astype(np.float32))
    assert ds.source == "unit"


def test_from_arrays_missing_key():
    arrays = _arrays()
    del arrays["next_observations"]
    with pytest.raises(DatasetError, match=r"my\.npz: missing required key\(s\) 'next_observations'"):
        Dataset.from_arrays(arrays, source="my.npz")


def test_from_arrays_mismatched_lengths():
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:4]
    with pytest.raises(DatasetError) as info:
        Dataset.from_arrays(arrays, source="src")
    message = str(info.value)
    assert "different lengths" in message
    for fragment in ("observations=6", "actions=6", "rewards=4", "next_observations=6", "terminals=6"):
        assert fragment in message


def test_from_arrays_nan_reports_count_and_first_index():
    arrays = _arrays(n=10)
    arrays["observations"][7, 1] = np.nan
    arrays["observations"][3, 2] = np.inf
    arrays["observations"][9, 0] = np.nan
    with pytest.raises(DatasetError) as info:
        Dataset.from_arrays(arrays, source="file.h5")
    message = str(info.value)
    assert "file.h5" in message and "'observations'" in message
    assert "3 non-finite" in message and "first at index 3" in message


def test_from_arrays_empty():
    arrays = {key: value[:0] for key, value in _arrays().items()}
    with pytest.raises(DatasetError, match="empty"):
        Dataset.from_arrays(arrays, source="empty-src")


def test_from_arrays_bad_shapes_and_flags():
    arrays = _arrays()
    arrays["observations"] = arrays["observations"][:, 0]
    with pytest.raises(DatasetError, match=r"'observations' must be 2-D.*shape \[6\]"):
        Dataset.from_arrays(arrays)
    arrays = _arrays()
    arrays["next_observations"] = arrays["next_observations"][:, :2]
    with pytest.raises(DatasetError, match="widths must match"):
        Dataset.from_arrays(arrays)
    arrays = _arrays()
    arrays["terminals"][2] = 0.5
    with pytest.raises(DatasetError, match="'terminals' must contain only 0/1.*index 2"):
        Dataset.from_arrays(arrays)


def test_from_arrays_clips_actions_with_warning():
    arrays = _arrays()
    arrays["actions"][1, 0] = 1.5
    arrays["actions"][4, 1] = -2.25
    with pytest.warns(UserWarning, match=r"clipping 2 action value\(s\).*max \|action\| = 2\.25"):
        ds = Dataset.from_arrays(arrays, source="clip-src")
    assert ds.actions.max() <= 1.0 and ds.actions.min() >= -1.0
    assert ds.actions[1, 0] == 1.0 and ds.actions[4, 1] == -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Dataset.from_arrays(_arrays())  # in-range actions: no warning


def test_direct_construction_is_checked():
    good = Dataset.from_arrays(_arrays())
    fields = good.arrays()
    fields["rewards"] = fields["rewards"][:3]
    with pytest.raises(DatasetError, match="different lengths"):
        Dataset(**fields)


# ------------------------------------------------------------------------------------------------
# D4RL HDF5
# ------------------------------------------------------------------------------------------------


def _write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
    return path


def _d4rl_rows():
    # Rows 0-2: episode ending in a true terminal at row 2. Rows 3-5: episode cut by a time-out at row 5.
    # Rows 6-7: an unfinished episode at the end of the file.
    n = 8
    observations = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    terminals = np.zeros(n, dtype=bool)
    terminals[2] = True
    timeouts = np.zeros(n, dtype=bool)
    timeouts[5] = True
    return {
        "observations": observations,
        "actions": np.full((n, 1), 0.5, dtype=np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def test_d4rl_without_next_observations(tmp_path):
    rows = _d4rl_rows()
    ds = load_d4rl_hdf5(_write_hdf5(tmp_path / "d.hdf5", rows))
    # Kept: 0, 1, 2 (terminal), 3, 4; dropped: 5 (time-out, no successor), 7 (end of file).  6 -> 7 kept.
    np.testing.assert_array_equal(ds.rewards, [0, 1, 2, 3, 4, 6])
    np.testing.assert_array_equal(ds.next_observations[[0, 1, 3, 4, 5]], rows["observations"][[1, 2, 4, 5, 7]])
    np.testing.assert_array_equal(ds.masks, [1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 1, 1])
    assert ds.obs_dim == 2 and ds.action_dim == 1


def test_d4rl_with_next_observations(tmp_path):
    rows = _d4rl_rows()
    rows["next_observations"] = rows["observations"] + 100.0
    ds = load_d4rl_hdf5(_write_hdf5(tmp_path / "d.h5", rows))
    assert ds.size == 8
    np.testing.assert_array_equal(ds.next_observations, rows["next_observations"])
    np.testing.assert_array_equal(ds.masks, 1.0 - rows["terminals"])
    np.testing.assert_array_equal(np.flatnonzero(ds.terminals), [2, 5, 7])


def test_d4rl_errors(tmp_path):
    with pytest.raises(DatasetError, match="missing.hdf5: file not found"):
        load_d4rl_hdf5(tmp_path / "missing.hdf5")
    rows = _d4rl_rows()
    del rows["rewards"]
    with pytest.raises(DatasetError, match=r"nokey\.hdf5: missing required key\(s\) 'rewards'"):
        load_d4rl_hdf5(_write_hdf5(tmp_path / "nokey.hdf5", rows))
    rows = _d4rl_rows()
    rows["actions"] = rows["actions"][:5]
    with pytest.raises(DatasetError, match=r"short\.hdf5: arrays have different lengths.*actions=5"):
        load_d4rl_hdf5(_write_hdf5(tmp_path / "short.hdf5", rows))
    rows = _d4rl_rows()
    rows["rewards"] = np.zeros((8, 2), dtype=np.float32)
    with pytest.raises(DatasetError, match=r"'rewards' must have shape \[N\] or \[N, 1\], got shape \[8, 2\]"):
        load_d4rl_hdf5(_write_hdf5(tmp_path / "shape.hdf5", rows))
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match="cannot open as HDF5"):
        load_d4rl_hdf5(tmp_path / "junk.hdf5")


def test_load_task_dataset_hdf5_path(tmp_path):
    path = _write_hdf5(tmp_path / "d.hdf5", _d4rl_rows())
    assert load_task_dataset(str(path)).size == 6


# ------------------------------------------------------------------------------------------------
# check_file
# ------------------------------------------------------------------------------------------------


def test_check_file_passes_generated_file(cube_files):
    train_path, val_path = cube_files
    summary = check_file(train_path)
    assert summary["format"] == "ogbench-npz"
    assert summary["episodes"] == EPISODES and summary["steps"] == EPISODES * STEPS
    assert summary["transitions"] == EPISODES * (STEPS - 1)
    assert summary["obs_dim"] == 28 and summary["action_dim"] == 5
    assert "qpos" in summary["keys"]
    low, high = summary["action_range"]
    assert -1.0 <= low < high <= 1.0
    assert summary["val_file"] == str(val_path)
    assert check_file(val_path)["episodes"] == 1


def _broken_copy(cube_files, tmp_path, name, mutate):
    arrays = _load_npz(cube_files[0])
    mutate(arrays)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda a: a["observations"].__setitem__((5, 0), np.nan), r"'observations' has 1 non-finite.*index 5"),
        (lambda a: a.__setitem__("terminals", np.zeros_like(a["terminals"])), "no True entry"),
        (lambda a: a["terminals"].__setitem__(-1, False), "False at the last index"),
        (lambda a: a["actions"].__setitem__((3, 2), 1.7), r"'actions' has 1 value\(s\) outside \[-1, 1\]"),
        (lambda a: a.__setitem__("actions", a["actions"][:-1]), r"different lengths.*actions=119"),
        (lambda a: a.pop("terminals"), r"missing required key\(s\) 'terminals'"),
    ],
    ids=["nan", "no-terminal", "cut-off", "action-range", "lengths", "missing-key"],
)
def test_check_file_rejects_broken_npz(cube_files, tmp_path, mutate, fragment):
    path = _broken_copy(cube_files, tmp_path, "broken.npz", mutate)
    with pytest.raises(DatasetError, match=fragment) as info:
        check_file(path, strict=True)  # strict: out-of-box actions are refused, not clipped
    assert "broken.npz" in str(info.value)


def test_check_file_hdf5_and_errors(tmp_path):
    rows = _d4rl_rows()
    summary = check_file(_write_hdf5(tmp_path / "d.hdf5", rows))
    assert summary["format"] == "d4rl-hdf5" and summary["transitions"] == 6 and summary["episodes"] == 3
    rows["actions"][2, 0] = 3.0
    with pytest.raises(DatasetError, match="outside"):
        check_file(_write_hdf5(tmp_path / "bad.hdf5", rows), strict=True)
    with pytest.raises(DatasetError, match="unknown data file extension '.csv'"):
        check_file(tmp_path / "data.csv")
    with pytest.raises(DatasetError, match=r"file not found; generate it with: vgf data make puzzle-3x3-play --out"):
        check_file(tmp_path / "puzzle-3x3-play-v0.npz")
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read as .npz"):
        check_file(tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------------------
# Bandit
# ------------------------------------------------------------------------------------------------


def test_bandit_dataset():
    ds = make_bandit_dataset(num_transitions=500, seed=3)
    assert ds.size == 500 and ds.obs_dim == bandit_env.OBS_DIM and ds.action_dim == bandit_env.ACTION_DIM
    np.testing.assert_allclose(ds.rewards, bandit_env.reward(ds.observations[:, 0], ds.actions), rtol=1e-6)
    np.testing.assert_array_equal(ds.masks, np.zeros(500))
    np.testing.assert_array_equal(ds.terminals, np.ones(500))
    np.testing.assert_array_equal(ds.next_observations, ds.observations)
    again = make_bandit_dataset(num_transitions=500, seed=3)
    np.testing.assert_array_equal(again.actions, ds.actions)
    assert not np.array_equal(make_bandit_dataset(num_transitions=500, seed=4).actions, ds.actions)
    # the behavior policy's rarest mode is the rewarding one: mean reward is well below the max of 1.
    assert 0.05 < ds.rewards.mean() < 0.6
    assert data.load_task_dataset("bandit").size == 20000
