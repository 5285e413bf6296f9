"""D4RL ('d4rl:<name>') and Minari ('minari:<id>') tasks trained and evaluated end to end with `vgf.training.train`.

All data is made here: a tiny D4RL-layout HDF5 file from random actions in Gymnasium's Hopper-v5, and a tiny Minari
dataset collected with `minari.DataCollector` in a temporary Minari directory. Nothing is downloaded.
"""

from __future__ import annotations

import json
import warnings

import gymnasium
import numpy as np
import pytest
from rich.console import Console

from vgf import cli
from vgf.data import D4RL_REFERENCE_RETURNS, d4rl_normalized_score
from vgf.envs import make_env, task_spec
from vgf.envs.d4rl_envs import _LOCOMOTION, _LOCOMOTION_DATASETS
from vgf.training import TrainSettings, train

TINY = {"hidden_dims": (32, 32), "batch_size": 32, "num_particles": 4}
QUICK = dict(preset="cpu-small", steps=20, eval_every=20, log_every=20, eval_episodes=2, eval_budgets=(0, 1), overrides=TINY)
# Flow BC compiles in a fraction of VGF's time; the tests that only need some agent to train use it.
QUICK_BC = dict(QUICK, overrides={"hidden_dims": (32, 32), "batch_size": 32})
HOPPER = "d4rl:hopper-medium-v2"
MINARI_ID = "vgf-test/car/random-v0"


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def write_d4rl_file(path, env_id: str, transitions: int, episode_steps: int, seed: int = 0, **make_kwargs) -> None:
    """A D4RL-layout HDF5 file: random actions, episodes ending by a fall (terminal) or at `episode_steps` (timeout)."""
    import h5py

    env = gymnasium.make(env_id, max_episode_steps=episode_steps, **make_kwargs)
    env.action_space.seed(seed)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    columns = {key: [] for key in keys}
    episode = 0
    while len(columns["rewards"]) < transitions:
        observation, _ = env.reset(seed=seed + episode)
        episode += 1
        done = False
        while not done:
            action = env.action_space.sample()
            next_observation, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(keys, (observation, action, reward, next_observation, terminated, truncated)):
                columns[key].append(value)
            observation, done = next_observation, terminated or truncated
    env.close()
    with h5py.File(path, "w") as handle:
        for key, values in columns.items():
            handle.create_dataset(key, data=np.asarray(values, dtype=bool if key in ("terminals", "timeouts") else np.float32))


@pytest.fixture(scope="module")
def d4rl_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("d4rl")
    write_d4rl_file(out / "hopper-medium-v2.hdf5", "Hopper-v5", transitions=2000, episode_steps=100)
    return out


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """A local Minari directory with a small dataset collected in MountainCarContinuous-v0 (30-step episodes)."""
    import minari

    root = tmp_path_factory.mktemp("minari")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        env = minari.DataCollector(gymnasium.make("MountainCarContinuous-v0", max_episode_steps=30), record_infos=False)
        env.action_space.seed(0)
        for episode in range(10):
            env.reset(seed=episode)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                done = terminated or truncated
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari's notes about metadata left at its defaults
            env.create_dataset(MINARI_ID, algorithm_name="random", author="vgf tests", author_email="none",
                               code_permalink="none", description="test")
        env.close()
    finally:
        patch.undo()
    return root


def test_d4rl_specs_match_gymnasium_envs_and_reference_returns():
    for family, env in _LOCOMOTION.items():
        for dataset in _LOCOMOTION_DATASETS:
            spec = task_spec(f"d4rl:{family}-{dataset}-v2")
            assert spec.d4rl_reference in D4RL_REFERENCE_RETURNS and spec.max_episode_steps == 1000
        built = make_env(f"d4rl:{family}-medium-v2")
        observation, _ = built.reset(seed=0)
        assert built.observation_space.shape == observation.shape == (env.obs_dim,)
        assert built.action_space.shape == (env.action_dim,) and built.spec.max_episode_steps == 1000
    assert (_LOCOMOTION["hopper"].obs_dim, _LOCOMOTION["hopper"].action_dim) == (11, 3)  # D4RL's dimensions
    assert (_LOCOMOTION["halfcheetah"].obs_dim, _LOCOMOTION["walker2d"].obs_dim) == (17, 17)
    ant = make_env("d4rl:ant-medium-v2")
    observation, _ = ant.reset(seed=0)
    for _ in range(20):
        observation, *_ = ant.step(ant.action_space.sample())
    assert np.all(observation[27:] == 0.0)  # D4RL's ant contact forces, all zero in its datasets


@pytest.mark.parametrize("bad", ["d4rl:hopper-medium", "d4rl:hopper-full-replay-v0", "d4rl:swimmer-medium-v2",
                                 "d4rl:antmaze-umaze-v1", "d4rl:"])
def test_unknown_d4rl_names_list_the_valid_ones(bad):
    with pytest.raises(ValueError, match=r"unknown D4RL task .*'d4rl:\{env\}-\{dataset\}-v\{0,1,2,5\}'.*antmaze"):
        task_spec(bad)


def test_train_and_evaluate_d4rl_hopper(d4rl_dir, tmp_path):
    run_dir = tmp_path / "run"
    final = train(TrainSettings(agent="vgf", task=HOPPER, run_dir=str(run_dir), data_dir=str(d4rl_dir), **QUICK))
    rows = read_rows(run_dir)
    assert rows[-1]["step"] == 20 and final == {key: value for key, value in rows[-1].items() if key.startswith("eval/")}
    for budget in (0, 1):
        episode_return = final[f"eval/budget_{budget}/return"]
        assert final[f"eval/budget_{budget}/normalized_score"] == d4rl_normalized_score("hopper-medium-v2", episode_return)
        assert 1 <= final[f"eval/budget_{budget}/length"] <= 1000
        assert f"eval/budget_{budget}/success" not in final  # Hopper reports no success
    assert (run_dir / "plots" / "learning_curve.png").is_file()
    text = render(cli.budget_table_from_row(final, "hopper"))
    assert "D4RL normalized score" in text and "success" not in text


def render(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_d4rl_missing_file_names_the_expected_path(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "data" / "hopper-medium-v2.hdf5")):
        train(TrainSettings(agent="vgf", task=HOPPER, run_dir=str(run_dir), data_dir=str(tmp_path / "data"), **QUICK))
    assert not (run_dir / "config.json").exists()


def test_d4rl_file_with_other_dimensions_is_refused(d4rl_dir, tmp_path):
    (tmp_path / "walker2d-medium-v2.hdf5").symlink_to(d4rl_dir / "hopper-medium-v2.hdf5")
    with pytest.raises(ValueError, match=r"observation dim 11 and action dim 3.*expects observation dim 17 and action dim 6"):
        train(TrainSettings(agent="vgf", task="d4rl:walker2d-medium-v2", run_dir=str(tmp_path / "run"),
                            data_dir=str(tmp_path), **QUICK))


def test_antmaze_trains_but_refuses_evaluation(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    size = 200
    with h5py.File(tmp_path / "antmaze-umaze-v2.hdf5", "w") as handle:
        handle["observations"] = rng.normal(size=(size, 29)).astype(np.float32)
        handle["actions"] = rng.uniform(-1, 1, size=(size, 8)).astype(np.float32)
        handle["rewards"] = (rng.uniform(size=size) < 0.05).astype(np.float32)
        handle["terminals"] = np.zeros(size, dtype=bool)
        handle["timeouts"] = np.arange(size) % 50 == 49
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="no Gymnasium equivalent.*Training without evaluation"):
        final = train(TrainSettings(agent="bc", task="d4rl:antmaze-umaze-v2", run_dir=str(run_dir),
                                    data_dir=str(tmp_path), **QUICK_BC))
    assert final == {} and read_rows(run_dir)[-1]["step"] == 20
    with pytest.raises(ValueError, match="AntMaze has no Gymnasium equivalent"):
        make_env("d4rl:antmaze-umaze-v2")


def test_train_and_evaluate_minari_dataset(minari_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    task = f"minari:{MINARI_ID}"
    spec = task_spec(task)
    assert (spec.env_id, spec.obs_dim, spec.action_dim, spec.max_episode_steps) == ("MountainCarContinuous-v0", 2, 1, 30)
    assert spec.d4rl_reference is None and spec.evaluation_refusal is None
    run_dir = tmp_path / "run"
    # data_dir is not where Minari datasets are read from: Minari's own directory is.
    final = train(TrainSettings(agent="bc", task=task, run_dir=str(run_dir), data_dir=str(tmp_path / "unused"), **QUICK_BC))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"]["transitions"] == 300 and str(minari_root) in config["dataset"]["source"]
    assert final["eval/budget_0/length"] == 30  # the time limit Minari recorded; BC is evaluated at budget 0 only
    assert np.isfinite(final["eval/budget_0/return"])
    assert "eval/budget_0/normalized_score" not in final and "eval/budget_0/success" not in final


def test_missing_minari_dataset_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(ValueError, match=f"no Minari dataset at {tmp_path / 'nobody/none-v0' / 'data'}.*minari download"):
        task_spec("minari:nobody/none-v0")


def test_minari_env_that_cannot_be_built_is_refused_when_named(minari_root, tmp_path, monkeypatch):
    """A dataset recorded in an env whose package is not installed here: an error naming it, before any training."""
    import shutil

    shutil.copytree(minari_root / MINARI_ID, tmp_path / "vgf-test/gone-v0")
    metadata_path = tmp_path / "vgf-test/gone-v0/data/metadata.json"
    metadata = json.loads(metadata_path.read_text())
    env_spec = json.loads(metadata["env_spec"])
    env_spec.update(id="VgfGone-v0", entry_point="vgf_no_such_module:GoneEnv")
    metadata.update(dataset_id="vgf-test/gone-v0", env_spec=json.dumps(env_spec))
    metadata_path.write_text(json.dumps(metadata))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(ValueError, match=r"VgfGone-v0, entry point vgf_no_such_module:GoneEnv\) cannot be built"):
        task_spec("minari:vgf-test/gone-v0")
