"""Every offline data source a user brings: D4RL HDF5, local Minari datasets, OGBench .npz.

All files are built here, small. Property tests (hypothesis) feed malformed D4RL and OGBench files to the
loaders and to `vgf data check` and check that each fails with its message and writes nothing.
"""

from __future__ import annotations

import math
import re
import tempfile
import urllib.request
import warnings
from pathlib import Path

import gymnasium
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgf.cli import main as cli_main
from vgf.data import (
    D4RL_REFERENCE_RETURNS,
    DatasetError,
    check_file,
    d4rl_normalized_score,
    list_local_minari_datasets,
    load_d4rl_hdf5,
    load_minari,
    load_ogbench_task,
    load_task_dataset,
)
from vgf.data.d4rl import D4RL_REQUIRED_KEYS

# Modest example counts keep this file well under a minute on two shared cores; nothing is stored on disk.
PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CUBE_TASK = "cube-single-play-singletask-task1"
CUBE_FILE = "cube-single-play-v0.npz"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to download (urllib, OGBench's or Minari's downloader) fails the test."""
    import minari
    import minari.storage.local
    import ogbench.utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(ogbench.utils, "download_datasets", refuse)
    monkeypatch.setattr(minari, "download_dataset", refuse)
    monkeypatch.setattr(minari.storage.local.hosting, "download_dataset", refuse)


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path under `directory` with its size and modification time: equal snapshots = nothing written."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def _write_hdf5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
    return path


# ------------------------------------------------------------------------------------------------
# File builders: valid D4RL and OGBench rows, and the ways to break them
# ------------------------------------------------------------------------------------------------


@st.composite
def d4rl_rows(draw, with_next_observations=None):
    """Valid D4RL-layout rows: random episode ends by terminal or time-out, the last row a terminal."""
    rows = draw(st.integers(2, 24))
    obs_dim, action_dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    terminals = rng.random(rows) < 0.15
    terminals[-1] = True
    timeouts = (rng.random(rows) < 0.15) & ~terminals
    arrays = {
        "observations": rng.normal(size=(rows, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(rows, action_dim)).astype(np.float32),
        "rewards": rng.normal(size=rows).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    if with_next_observations is None:
        with_next_observations = draw(st.booleans())
    if with_next_observations:
        arrays["next_observations"] = rng.normal(size=(rows, obs_dim)).astype(np.float32)
    return arrays


@st.composite
def ogbench_rows(draw):
    """Valid OGBench-layout rows (cube-single widths): episodes end with a terminal step, the last one too."""
    rows = draw(st.integers(2, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    terminals = rng.random(rows) < 0.2
    terminals[-1] = True
    return {
        "observations": rng.normal(size=(rows, 28)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(rows, 5)).astype(np.float32),
        "terminals": terminals,
        "qpos": np.zeros((rows, 21), dtype=np.float32),
        "qvel": np.zeros((rows, 20), dtype=np.float32),
    }


def _out_of_box_value():
    return st.one_of(st.floats(1.01, 100.0), st.floats(-100.0, -1.01))


def _flat_entries(draw, array: np.ndarray, most: int = 5) -> list[int]:
    return draw(st.lists(st.integers(0, array.size - 1), min_size=1, max_size=min(most, array.size), unique=True))


@st.composite
def corruptions(draw, rows_strategy, required_keys, float_keys):
    """(malformed arrays, message fragments the error must contain), one defect per example."""
    arrays = draw(rows_strategy)
    rows = len(arrays["observations"])
    kind = draw(st.sampled_from(["missing-key", "lengths", "non-finite", "action-box", "empty"]))
    if kind == "missing-key":
        key = draw(st.sampled_from(required_keys))
        del arrays[key]
        return arrays, [f"missing required key(s) '{key}'"]
    if kind == "lengths":
        key = draw(st.sampled_from(sorted(arrays)))
        kept = rows - draw(st.integers(1, rows))
        arrays[key] = arrays[key][:kept]
        return arrays, ["arrays have different lengths", f"{key}={kept}"]
    if kind == "non-finite":
        key = draw(st.sampled_from([k for k in float_keys if k in arrays]))
        value = arrays[key].copy()
        entries = _flat_entries(draw, value)
        value.reshape(-1)[entries] = [draw(st.sampled_from([math.nan, math.inf, -math.inf])) for _ in entries]
        arrays[key] = value
        first_row = min(entries) // (value.size // rows)
        return arrays, [f"key '{key}' has {len(entries)} non-finite value(s)", f"first at index {first_row}"]
    if kind == "action-box":
        actions = arrays["actions"].copy()
        entries = _flat_entries(draw, actions)
        actions.reshape(-1)[entries] = [draw(_out_of_box_value()) for _ in entries]
        arrays["actions"] = actions
        first_row = min(entries) // actions.shape[1]
        return arrays, [f"'actions' has {len(entries)} value(s) outside [-1, 1], first at index {first_row}", "strict"]
    return {key: value[:0] for key, value in arrays.items()}, ["dataset is empty"]


def _assert_refused(call, path: Path, fragments: list[str]) -> None:
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def _cli_check(path: Path, capsys) -> tuple[int, str]:
    code = cli_main(["data", "check", str(path)])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())  # rich wraps long lines


# ------------------------------------------------------------------------------------------------
# Property tests: malformed files fail with their message and nothing is written
# ------------------------------------------------------------------------------------------------

_D4RL_FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
_OGBENCH_FLOAT_KEYS = ("observations", "actions", "qpos", "qvel")


@PROPERTY_SETTINGS
@given(case=corruptions(d4rl_rows(), D4RL_REQUIRED_KEYS, _D4RL_FLOAT_KEYS))
def test_malformed_d4rl_files_are_refused(case):
    arrays, fragments = case
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = _write_hdf5(directory / "hopper-medium-v2.hdf5", arrays)
        before = _snapshot(directory)
        _assert_refused(lambda: load_d4rl_hdf5(path, strict=True), path, fragments)
        _assert_refused(lambda: check_file(path, strict=True), path, fragments)
        _assert_refused(lambda: load_task_dataset(str(path), strict=True), path, fragments)
        assert _snapshot(directory) == before


@PROPERTY_SETTINGS
@given(case=corruptions(ogbench_rows(), ("observations", "actions", "terminals"), _OGBENCH_FLOAT_KEYS))
def test_malformed_ogbench_files_are_refused(case):
    arrays, fragments = case
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = directory / CUBE_FILE
        np.savez(path, **arrays)
        np.savez(directory / CUBE_FILE.replace(".npz", "-val.npz"), **arrays)
        before = _snapshot(directory)
        _assert_refused(lambda: check_file(path, strict=True), path, fragments)
        # The files are checked before OGBench's loader (or environment) is ever reached.
        _assert_refused(lambda: load_ogbench_task(CUBE_TASK, directory, strict=True), path, fragments)
        assert _snapshot(directory) == before


@PROPERTY_SETTINGS
@given(arrays=d4rl_rows(), data=st.data())
def test_out_of_box_actions_are_clipped_with_a_warning(arrays, data):
    actions = arrays["actions"]
    entries = _flat_entries(data.draw, actions)
    actions.reshape(-1)[entries] = [data.draw(_out_of_box_value()) for _ in entries]
    first_row = min(entries) // actions.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = _write_hdf5(directory / "walker2d-medium-v2.hdf5", arrays)
        before = _snapshot(directory)
        expected = re.escape(f"{path}: clipping {len(entries)} action value(s) outside [-1, 1], first at index {first_row} ")
        with pytest.warns(UserWarning, match=expected):
            dataset = load_d4rl_hdf5(path)
        with pytest.warns(UserWarning, match=expected):
            summary = check_file(path)
        assert summary["actions_outside_box"] == len(entries) and summary["first_action_outside_box"] == first_row
        assert np.abs(dataset.actions).max() <= 1.0
        assert _snapshot(directory) == before


@PROPERTY_SETTINGS
@given(arrays=d4rl_rows(with_next_observations=False))
def test_derived_next_observations_never_cross_an_episode_end(arrays):
    rows = len(arrays["observations"])
    episode_end = arrays["terminals"] | arrays["timeouts"]
    episode = np.concatenate([[0], np.cumsum(episode_end[:-1])])
    # Observation = (episode id, step number in the file): where each s' came from can be read off it.
    arrays["observations"] = np.stack([episode, np.arange(rows)], axis=1).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_d4rl_hdf5(_write_hdf5(Path(tmp) / "d.hdf5", arrays))
    obs, next_obs = dataset.observations, dataset.next_observations
    assert dataset.size == rows - int(arrays["timeouts"].sum())  # a time-out row has no successor in the file
    np.testing.assert_array_equal(next_obs[:, 0], obs[:, 0])  # same episode, always
    bootstrapped = dataset.masks == 1.0
    np.testing.assert_array_equal(next_obs[bootstrapped, 1], obs[bootstrapped, 1] + 1)
    np.testing.assert_array_equal(next_obs[~bootstrapped], obs[~bootstrapped])  # terminal: s' unused, set to s
    np.testing.assert_array_equal(dataset.masks, 1.0 - arrays["terminals"][obs[:, 1].astype(int)])


def test_cli_data_check_reports_malformed_files_and_writes_nothing(tmp_path, capsys):
    rows = {
        "observations": np.zeros((6, 3), np.float32),
        "actions": np.zeros((6, 2), np.float32),
        "rewards": np.zeros(6, np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 1], bool),
    }
    rows["rewards"][4] = np.nan
    bad_hdf5 = _write_hdf5(tmp_path / "bad.hdf5", rows)
    bad_npz = tmp_path / "bad.npz"
    np.savez(bad_npz, observations=np.zeros((4, 3)), actions=np.zeros((3, 2)), terminals=np.ones(4, bool))
    before = _snapshot(tmp_path)

    code, output = _cli_check(bad_hdf5, capsys)
    assert code == 2 and f"{bad_hdf5}: key 'rewards' has 1 non-finite value(s) (NaN or inf); first at index 4" in output
    code, output = _cli_check(bad_npz, capsys)
    assert code == 2 and "arrays have different lengths" in output and "actions=3" in output
    code, output = _cli_check(tmp_path / "absent.hdf5", capsys)
    assert code == 2 and "absent.hdf5: file not found" in output
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# D4RL: reward conventions and normalised scores
# ------------------------------------------------------------------------------------------------


def _two_episodes() -> dict[str, np.ndarray]:
    """Rows 0-3: an episode ended by a terminal (return 1). Rows 4-7: one cut by a time-out (return 0.5)."""
    terminals = np.zeros(8, bool)
    terminals[3] = True
    timeouts = np.zeros(8, bool)
    timeouts[7] = True
    return {
        "observations": np.arange(16, dtype=np.float32).reshape(8, 2),
        "actions": np.zeros((8, 1), np.float32),
        "rewards": np.array([0, 0, 0, 1, 0.25, 0.25, 0, 0], np.float32),
        "next_observations": np.arange(2, 18, dtype=np.float32).reshape(8, 2),
        "terminals": terminals,
        "timeouts": timeouts,
    }


@pytest.mark.parametrize(
    "file_name, task, reward_transform, shifted",
    [
        ("antmaze-umaze-v2.hdf5", None, "auto", True),
        ("Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5", None, "auto", True),
        ("data.hdf5", "antmaze-large-play-v2", "auto", True),
        ("data.hdf5", None, "antmaze", True),
        ("antmaze-umaze-v2.hdf5", None, "none", False),
        ("hopper-medium-v2.hdf5", None, "auto", False),
    ],
)
def test_antmaze_reward_shift(tmp_path, file_name, task, reward_transform, shifted):
    rows = _two_episodes()
    dataset = load_d4rl_hdf5(_write_hdf5(tmp_path / file_name, rows), task=task, reward_transform=reward_transform)
    np.testing.assert_array_equal(dataset.rewards, rows["rewards"] - (1.0 if shifted else 0.0))
    np.testing.assert_array_equal(dataset.masks, 1.0 - rows["terminals"])  # the shift leaves masks alone


def test_locomotion_reward_scaling_is_opt_in(tmp_path):
    path = _write_hdf5(tmp_path / "halfcheetah-medium-v2.hdf5", _two_episodes())
    np.testing.assert_array_equal(load_d4rl_hdf5(path).rewards, _two_episodes()["rewards"])
    scaled = load_d4rl_hdf5(path, reward_transform="locomotion")
    # Episode returns 1.0 and 0.5 span 0.5, so rewards are multiplied by 1000 / 0.5.
    np.testing.assert_allclose(scaled.rewards, _two_episodes()["rewards"] * 2000.0)
    np.testing.assert_allclose([scaled.rewards[:4].sum(), scaled.rewards[4:].sum()], [2000.0, 1000.0])

    one_episode = {key: value[:4] for key, value in _two_episodes().items()}
    with pytest.raises(DatasetError, match=r"needs episodes with different returns; all 1 episode\(s\) return 1"):
        load_d4rl_hdf5(_write_hdf5(tmp_path / "one.hdf5", one_episode), reward_transform="locomotion")
    with pytest.raises(DatasetError, match="unknown reward_transform 'scale'; valid: auto, none, antmaze, locomotion"):
        load_d4rl_hdf5(path, reward_transform="scale")


def test_d4rl_check_summary(tmp_path):
    summary = check_file(_write_hdf5(tmp_path / "antmaze-umaze-v2.hdf5", _two_episodes()))
    assert summary["format"] == "d4rl-hdf5" and summary["transitions"] == 8 and summary["episodes"] == 2
    assert summary["actions_outside_box"] == 0 and summary["first_action_outside_box"] is None
    assert summary["default_reward_transform"] == "antmaze (r - 1)"


def test_d4rl_normalized_score():
    assert d4rl_normalized_score("hopper-medium-v2", 3234.3) == pytest.approx(100.0)
    assert d4rl_normalized_score("hopper-medium-v2", -20.272305) == pytest.approx(0.0)
    assert d4rl_normalized_score("halfcheetah-medium-expert-v2", (12135.0 - 280.178953) / 2) == pytest.approx(50.0, abs=1e-9)
    np.testing.assert_allclose(d4rl_normalized_score("antmaze-large-diverse-v2", np.array([0.0, 0.25, 1.0])), [0, 25, 100])
    assert d4rl_normalized_score("kitchen-mixed-v0", 2.0) == pytest.approx(50.0)
    for env in ("halfcheetah", "hopper", "walker2d"):
        for dataset in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            assert f"{env}-{dataset}-v2" in D4RL_REFERENCE_RETURNS
    for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse"):
        assert D4RL_REFERENCE_RETURNS[f"antmaze-{maze}-v2"] == (0.0, 1.0)
    assert D4RL_REFERENCE_RETURNS["pen-human-v1"] == D4RL_REFERENCE_RETURNS["pen-cloned-v0"]

    with pytest.raises(DatasetError) as info:
        d4rl_normalized_score("hoper-medium-v2", 1000.0)
    message = str(info.value)
    assert "'hoper-medium-v2'" in message and "did you mean hopper-medium-v2" in message
    assert "Known tasks: " in message and "walker2d-expert-v2" in message and "antmaze-umaze-v2" in message


# ------------------------------------------------------------------------------------------------
# OGBench .npz built here (no generator run)
# ------------------------------------------------------------------------------------------------


def test_ogbench_npz_built_here_loads_and_clips(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(12, 28)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(12, 5)).astype(np.float32),
        "terminals": np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], bool),
        "qpos": np.zeros((12, 21), np.float32),
        "qvel": np.zeros((12, 20), np.float32),
    }
    np.savez(tmp_path / CUBE_FILE.replace(".npz", "-val.npz"), **arrays)
    arrays["actions"][7, 3] = -1.25
    np.savez(tmp_path / CUBE_FILE, **arrays)
    before = _snapshot(tmp_path)

    clipped = re.escape(f"{CUBE_FILE}: clipping 1 action value(s) outside [-1, 1], first at index 7")
    with pytest.warns(UserWarning, match=clipped):
        train, val = load_ogbench_task(CUBE_TASK, tmp_path)
    assert train.size == 10 and val.size == 10  # the last step of each of the two episodes starts no transition
    assert train.actions.min() == -1.0 and np.isclose(train.actions[6, 3], -1.0)  # row 7 is transition 6
    np.testing.assert_array_equal(train.next_observations[:5], arrays["observations"][1:6])
    with pytest.raises(DatasetError, match=re.escape(CUBE_FILE) + r": key 'actions' has 1 value\(s\) outside .*index 7"):
        load_task_dataset(CUBE_TASK, tmp_path, strict=True)
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# Minari: datasets built here in a temporary local Minari directory
# ------------------------------------------------------------------------------------------------

_METADATA = dict(algorithm_name="random", author="vgf tests", author_email="none", code_permalink="none", description="test")


def _collect(dataset_id: str, env_id: str, episodes: int, steps: int):
    import minari

    env = minari.DataCollector(gymnasium.make(env_id, max_episode_steps=steps), record_infos=False)
    env.action_space.seed(0)
    for episode in range(episodes):
        env.reset(seed=episode)
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari's notes about metadata left at defaults
        env.create_dataset(dataset_id, **_METADATA)
    env.close()


def _from_buffers(dataset_id: str, episodes, observation_space, action_space):
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, truncations=[False] * len(ep["rewards"]), **ep) for i, ep in enumerate(episodes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=observation_space, action_space=action_space, **_METADATA
        )


def _dict_episode(rng, steps: int, terminated: bool) -> dict:
    return {
        "observations": {
            "observation": rng.normal(size=(steps + 1, 3)).astype(np.float32),
            "goal": rng.normal(size=(steps + 1, 2)).astype(np.float32),
        },
        "actions": rng.uniform(-1, 1, size=(steps, 2)).astype(np.float32),
        "rewards": list(rng.normal(size=steps)),
        "terminations": [False] * (steps - 1) + [terminated],
    }


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """A local Minari directory holding: a collected Box-space dataset, a Dict-observation one built from
    buffers (one action outside the box), one with [-2, 2] actions, one with a NaN reward, a discrete one."""
    root = tmp_path_factory.mktemp("minari")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        _collect("vgf-test/car/random-v0", "MountainCarContinuous-v0", episodes=3, steps=6)
        _collect("vgf-test/cartpole/random-v0", "CartPole-v1", episodes=1, steps=4)
        rng = np.random.default_rng(0)
        dict_space = gymnasium.spaces.Dict(
            {"observation": gymnasium.spaces.Box(-10, 10, (3,)), "goal": gymnasium.spaces.Box(-10, 10, (2,))}
        )
        unit_box = gymnasium.spaces.Box(-1, 1, (2,))
        episodes = [_dict_episode(rng, 4, terminated=True), _dict_episode(rng, 3, terminated=False)]
        episodes[0]["actions"][1, 0] = 1.5
        episodes[1]["actions"][2, 1] = -3.0
        _from_buffers("vgf-test/dict-v0", episodes, dict_space, unit_box)
        _from_buffers("vgf-test/wide-v0", [_dict_episode(rng, 3, True)], dict_space, gymnasium.spaces.Box(-2, 2, (2,)))
        episodes = [_dict_episode(rng, 3, True), _dict_episode(rng, 4, True)]
        episodes[1]["rewards"][2] = math.nan
        _from_buffers("vgf-test/nan-v0", episodes, dict_space, unit_box)
    finally:
        patch.undo()
    return root


def test_minari_collected_dataset_to_transitions(minari_root, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    episodes = list(minari.load_dataset("vgf-test/car/random-v0", download=False).iterate_episodes())
    before = _snapshot(minari_root)

    dataset = load_minari("vgf-test/car/random-v0")  # root from MINARI_DATASETS_PATH
    assert dataset.size == sum(len(ep) for ep in episodes) == 18 and dataset.obs_dim == 2 and dataset.action_dim == 1
    np.testing.assert_array_equal(dataset.observations, np.concatenate([ep.observations[:-1] for ep in episodes]))
    np.testing.assert_array_equal(dataset.next_observations, np.concatenate([ep.observations[1:] for ep in episodes]))
    np.testing.assert_array_equal(dataset.actions, np.concatenate([ep.actions for ep in episodes]))
    np.testing.assert_array_equal(dataset.rewards, np.concatenate([ep.rewards for ep in episodes]).astype(np.float32))
    np.testing.assert_array_equal(dataset.masks, 1.0 - np.concatenate([ep.terminations for ep in episodes]))
    np.testing.assert_array_equal(np.flatnonzero(dataset.terminals), [5, 11, 17])
    assert load_task_dataset("minari:vgf-test/car/random-v0", data_dir=minari_root).size == 18
    assert _snapshot(minari_root) == before


def test_minari_dict_observations_terminations_and_action_box(minari_root):
    import minari

    source = minari.MinariDataset(minari_root / "vgf-test/dict-v0" / "data")
    first = next(iter(source.iterate_episodes()))
    with pytest.warns(UserWarning, match=r"dict-v0.*clipping 2 action value\(s\) outside \[-1, 1\], first at index 1 "):
        dataset = load_minari("vgf-test/dict-v0", root=minari_root)
    assert dataset.size == 7 and dataset.obs_dim == 5
    third_step = {key: value[2] for key, value in first.observations.items()}
    expected = gymnasium.spaces.flatten(source.observation_space, third_step)
    np.testing.assert_array_equal(dataset.observations[2], expected)
    np.testing.assert_array_equal(dataset.masks, [1, 1, 1, 0, 1, 1, 1])  # episode 0 terminated, episode 1 cut
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 1, 0, 0, 1])
    assert dataset.actions[1, 0] == 1.0 and dataset.actions[6, 1] == -1.0

    with pytest.raises(DatasetError, match=r"key 'actions' has 2 value\(s\) outside \[-1, 1\], first at index 1 .*strict"):
        load_minari("vgf-test/dict-v0", root=minari_root, strict=True)
    with pytest.warns(UserWarning, match=r"wide-v0.*action space is Box\(-2\.0, 2\.0, \(2,\), float32\), not \[-1, 1\]"):
        load_minari("vgf-test/wide-v0", root=minari_root, strict=True)  # its own box: nothing clipped


def test_minari_errors(minari_root, tmp_path):
    before = _snapshot(minari_root)
    with pytest.raises(DatasetError) as info:
        load_minari("D4RL/pen/human-v2", root=minari_root)
    message = str(info.value)
    assert f"'D4RL/pen/human-v2' is not in the local Minari directory {minari_root}" in message
    assert "vgf-test/car/random-v0, vgf-test/cartpole/random-v0, vgf-test/dict-v0" in message
    assert "Nothing is downloaded" in message
    assert list_local_minari_datasets(minari_root) == [
        "vgf-test/car/random-v0", "vgf-test/cartpole/random-v0", "vgf-test/dict-v0", "vgf-test/nan-v0", "vgf-test/wide-v0",
    ]
    with pytest.raises(DatasetError, match=r"local datasets: \(none\)"):
        load_minari("vgf-test/car/random-v0", root=tmp_path)
    with pytest.raises(DatasetError, match="no local Minari directory there .*nothing is downloaded"):
        load_minari("vgf-test/car/random-v0", root=tmp_path / "absent")
    assert not (tmp_path / "absent").exists()

    with pytest.raises(DatasetError, match=r"cartpole/random-v0.*action space Discrete\(2\) is not a Box"):
        load_minari("vgf-test/cartpole/random-v0", root=minari_root)
    nan_reward = r"nan-v0.* episode 1: key 'rewards' has 1 non-finite value\(s\).*first at index 2"
    with pytest.raises(DatasetError, match=nan_reward):
        load_minari("vgf-test/nan-v0", root=minari_root)
    assert _snapshot(minari_root) == before
