"""`vgf data make <env>-<dataset>-v5`: D4RL-protocol locomotion datasets from a local SAC teacher, end to end.

The teacher here is tiny (a few thousand steps, a lowered threshold); everything else is the real path: sbx-rl's
SAC in Gymnasium's Hopper-v5, the D4RL HDF5 layout, `vgf data check`, and `vgf train` on `d4rl:hopper-*-v5`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from vgf import cli
from vgf.data import check_file, d4rl_normalized_score, load_d4rl_hdf5
from vgf.data.dataset import DatasetError
from vgf.data.locomotion import (
    LOCOMOTION_DATASETS,
    LOCOMOTION_ENVS,
    dataset_summary,
    episode_returns,
    generate_locomotion_dataset,
    medium_threshold,
    parse_locomotion_name,
    read_transitions,
    write_d4rl_hdf5,
)
from vgf.data.sac_teacher import GaussianActor, SACTeacher, TeacherConfig, TeacherError
from vgf.envs import task_spec
from vgf.training import TrainSettings, deterministic_policy, evaluate_policy

TEACHER = {"learning_starts": 500, "eval_every": 1000, "checkpoint_every": 1000, "eval_episodes": 2}
TINY = dict(teacher_budget=3000, teacher_settings=TEACHER, progress=False)
EASY = -1e9  # a threshold every evaluation reaches: the first one (1000 steps) is "medium"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One tiny teacher run and the datasets it serves, collected in this process."""
    out = tmp_path_factory.mktemp("loco")
    paths = {
        dataset: generate_locomotion_dataset(f"hopper-{dataset}-v5", out, transitions=1500, workers=0,
                                             medium_return=EASY, **TINY)
        for dataset in ("medium", "medium-replay", "random", "medium-expert")
    }
    return out, paths


def test_names_and_thresholds():
    assert parse_locomotion_name("walker2d-medium-replay-v5") == ("walker2d", "medium-replay")
    assert {(env, d) for env in LOCOMOTION_ENVS for d in LOCOMOTION_DATASETS} == {
        parse_locomotion_name(f"{env}-{d}-v5") for env in LOCOMOTION_ENVS for d in LOCOMOTION_DATASETS}
    for bad in ("swimmer-medium-v5", "hopper-meduim-v5", "hopper-full-replay-v5"):
        with pytest.raises(DatasetError, match="valid names are .*hopper, walker2d, halfcheetah.*medium-replay"):
            parse_locomotion_name(bad)
    assert medium_threshold("hopper") == pytest.approx(3234.3 / 3)  # D4RL's expert return for hopper, a third of it
    assert d4rl_normalized_score("hopper-medium-v5", medium_threshold("hopper")) == pytest.approx(33.75, abs=0.01)


def test_cli_refuses_unknown_name_with_the_valid_ones(tmp_path, capsys):
    assert cli.main(["data", "make", "hopper-mediun-v5", "--out", str(tmp_path)]) == 2
    assert "valid names are" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_numpy_actor_is_the_sbx_policy():
    """The actor that collects the data computes what sbx's SAC policy computes: its mode, and samples from it."""
    import gymnasium
    import jax
    from sbx import SAC

    model = SAC("MlpPolicy", gymnasium.make("Hopper-v5"), seed=3)
    actor = GaussianActor.from_sbx(model.policy.actor_state.params)
    observations = np.random.default_rng(0).normal(size=(64, 11)).astype(np.float32)
    mode = np.asarray(model.policy.actor_state.apply_fn(model.policy.actor_state.params, observations).mode())
    np.testing.assert_allclose(actor.act(observations), mode, atol=1e-5)
    noise = np.random.default_rng(1).standard_normal((64, 3))
    distribution = model.policy.actor_state.apply_fn(model.policy.actor_state.params, observations)
    samples = np.asarray(distribution.sample(seed=jax.random.PRNGKey(0), sample_shape=(4000,)))
    mean, log_std = actor.distribution(observations)
    pre_tanh = np.arctanh(np.clip(samples, -1 + 1e-6, 1 - 1e-6))
    np.testing.assert_allclose(pre_tanh.mean(0), mean, atol=0.1)  # sbx's sampler, our mean and std
    np.testing.assert_allclose(pre_tanh.std(0), np.exp(log_std), rtol=0.1)
    assert actor.act(observations, noise).shape == (64, 3)


def test_datasets_have_d4rl_layout_provenance_and_check(made):
    out, paths = made
    for dataset, path in paths.items():
        summary = check_file(path)
        assert summary["format"] == "d4rl-hdf5" and summary["obs_dim"] == 11 and summary["action_dim"] == 3
        with h5py.File(path) as handle:
            assert set(handle) == {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
                                   "infos"}
            assert set(handle["infos"]) == {"qpos", "qvel"}
            assert handle["infos/qpos"].shape == (summary["rows"], 6) and handle["infos/qvel"].shape == (summary["rows"], 6)
            attrs = dict(handle.attrs)
        assert attrs["dataset"] == f"hopper-{dataset}-v5" and attrs["env_id"] == "Hopper-v5" and attrs["seed"] == 0
        for key in ("gymnasium_version", "mujoco_version", "vgf_version", "teacher_algorithm", "medium_threshold_source"):
            assert attrs[key], key
        assert "SAC (sbx-rl" in attrs["teacher_algorithm"]
        assert summary["attributes"]["dataset"] == attrs["dataset"]  # `vgf data check` shows where it came from
    with h5py.File(paths["medium"]) as handle:
        attrs = dict(handle.attrs)
        terminals, timeouts = handle["terminals"][()], handle["timeouts"][()]
        qpos, observations = handle["infos/qpos"][()], handle["observations"][()]
    assert attrs["medium_threshold_return"] == EASY and attrs["medium_teacher_steps"] == 1000  # the first evaluation
    assert summary_rows(paths["medium"]) == 1500 and timeouts[-1] and terminals.any()  # cut at N; hopper falls
    np.testing.assert_allclose(qpos[:, 1:], observations[:, :5], atol=1e-6)  # qpos before the step: obs = qpos[1:], qvel
    # medium-expert is medium and expert, one after the other
    with h5py.File(paths["medium-expert"]) as merged, h5py.File(paths["medium"]) as medium:
        np.testing.assert_array_equal(merged["observations"][:1500], medium["observations"][()])
        assert merged["observations"].shape[0] == 3000
        assert dict(merged.attrs)["expert_teacher_steps"] == 3000  # the expert is the teacher at its budget


def summary_rows(path) -> int:
    with h5py.File(path) as handle:
        return int(handle["rewards"].shape[0])


def test_medium_replay_is_the_teachers_buffer_up_to_medium(made):
    out, paths = made
    state = json.loads((out / "teachers" / "hopper-v5-s0" / "state.json").read_text())
    arrays = load_d4rl_hdf5(paths["medium-replay"])
    assert arrays.size == state["medium"]["log_transitions"] == 1000
    with h5py.File(paths["medium-replay"]) as handle:
        rewards, ends = handle["rewards"][()], handle["terminals"][()] | handle["timeouts"][()]
        returns = episode_returns({"rewards": rewards, "terminals": handle["terminals"][()],
                                   "timeouts": handle["timeouts"][()]})
        attrs = dict(handle.attrs)
        qpos, observations = handle["infos/qpos"][()], handle["observations"][()]
    np.testing.assert_allclose(qpos[:, 1:], observations[:, :5], atol=1e-6)
    assert ends[-1] and len(returns) == attrs["episodes"] == ends.sum()
    assert attrs["return_mean"] == pytest.approx(returns.mean()) and attrs["return_max"] == pytest.approx(returns.max())


def test_same_bytes_whatever_the_worker_count(made, tmp_path):
    out, paths = made
    again = generate_locomotion_dataset("hopper-medium-v5", tmp_path, transitions=1500, workers=2,
                                        teacher_dir=out / "teachers", medium_return=EASY, **TINY)
    assert sha256(again) == sha256(paths["medium"])


def test_files_are_compressed_and_read_back_exactly(made, tmp_path):
    _, paths = made
    arrays = read_transitions(paths["medium"])
    with h5py.File(paths["medium"]) as handle:
        assert {handle[key].compression for key in ("observations", "actions", "infos/qpos")} == {"gzip"}
        attrs = dict(handle.attrs)
    copy = tmp_path / "copy.hdf5"
    write_d4rl_hdf5(copy, arrays, attrs)  # what is read back writes the same file again
    assert sha256(copy) == sha256(paths["medium"])
    assert load_d4rl_hdf5(copy).content_sha256() == load_d4rl_hdf5(paths["medium"]).content_sha256()


def test_train_runs_on_a_made_dataset(made, tmp_path):
    out, _ = made
    assert task_spec("d4rl:hopper-medium-replay-v5").d4rl_reference == "hopper-medium-replay-v5"
    code = cli.main(["train", "bc", "--task", "d4rl:hopper-medium-replay-v5", "--preset", "cpu-small", "--steps", "20",
                     "--eval-every", "20", "--log-every", "20", "--eval-episodes", "2", "--set", "hidden_dims=[32,32]",
                     "--data-dir", str(out), "--run-dir", str(tmp_path / "run")])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite([row["eval/budget_0/normalized_score"] for row in rows if "eval/budget_0/normalized_score" in row]).all()
    settings = json.loads((tmp_path / "run" / "config.json").read_text())["settings"]
    assert settings["normalize_rewards"] is False  # BC's reference does not scale rewards; the run records it
    vgf_settings = TrainSettings("vgf", "d4rl:hopper-medium-replay-v5", str(tmp_path / "v"))
    assert vgf_settings.normalize_rewards is None and vgf_settings.with_defaults().normalize_rewards is True


def test_another_librarys_policy_is_evaluated_like_an_agent(made):
    out, _ = made
    spec = task_spec("d4rl:hopper-medium-v5")
    zero = deterministic_policy(lambda observations: np.zeros((len(observations), spec.action_dim)))
    first, again = (evaluate_policy(zero, "d4rl:hopper-medium-v5", [0], episodes=3, seed=5, per_episode=True)[0]
                    for _ in range(2))
    assert first["per_episode"]["return"] == again["per_episode"]["return"]  # reset seeds 5, 6, 7: the same starts
    assert first["normalized_score"] == pytest.approx(d4rl_normalized_score("hopper-medium-v5", first["return"]))


def test_dataset_summary_is_the_files_record(made):
    _, paths = made
    summary = dataset_summary(paths["medium"])
    assert summary["sha256"] == sha256(paths["medium"]) and summary["transitions"] == 1500
    assert summary["content_sha256"] == check_file(paths["medium"])["content_sha256"] \
        == load_d4rl_hdf5(paths["medium"]).content_sha256()
    assert summary["normalized_return_mean"] == pytest.approx(
        d4rl_normalized_score("hopper-medium-v5", summary["return_mean"]))


def test_unreachable_threshold_stops_with_the_return_reached_and_no_file(tmp_path, capsys):
    with pytest.raises(TeacherError, match=r"did not reach the medium threshold 100000\.0; best evaluated return"):
        generate_locomotion_dataset("hopper-medium-v5", tmp_path, transitions=100, workers=0, medium_return=1e5,
                                    teacher_budget=2000, teacher_settings=TEACHER, progress=False)
    assert not (tmp_path / "hopper-medium-v5.hdf5").exists()
    again = generate_locomotion_dataset  # the same teacher run, already at its budget, says so at once
    with pytest.raises(TeacherError, match="best evaluated return"):
        again("hopper-medium-replay-v5", tmp_path, medium_return=1e5, teacher_budget=2000, teacher_settings=TEACHER,
              progress=False)
    code = cli.main(["data", "make", "hopper-medium-v5", "--out", str(tmp_path / "cli"), "--medium-return", "1e5",
                     "--teacher-steps", "5000"])  # the CLI's own teacher settings: one evaluation at 5000 steps
    assert code == 2 and "did not reach the medium threshold 100000.0" in capsys.readouterr().err
    assert not list((tmp_path / "cli").glob("*.hdf5"))


KILLABLE = """
import sys
from vgf.data.locomotion import generate_locomotion_dataset
teacher = dict(learning_starts=500, eval_every=1000, checkpoint_every=1000, eval_episodes=2)
generate_locomotion_dataset("hopper-expert-v5", sys.argv[1], transitions=200, workers=0, teacher_budget=6000,
                            teacher_settings=teacher, progress=False)
"""


def test_killed_teacher_resumes_from_its_checkpoint(tmp_path):
    state_path = tmp_path / "teachers" / "hopper-v5-s0" / "state.json"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if state_path.is_file() and json.loads(state_path.read_text())["steps"] >= 2000:
            break
        time.sleep(0.2)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed_at = json.loads(state_path.read_text())["steps"]
    assert 2000 <= killed_at < 6000

    path = generate_locomotion_dataset("hopper-expert-v5", tmp_path, transitions=200, workers=0, teacher_budget=6000,
                                       teacher_settings=TEACHER, progress=False)
    state = json.loads(state_path.read_text())
    assert state["resumes"] == 1 and state["steps"] == 6000 and state["expert"]["steps"] == 6000
    steps = [row["steps"] for row in state["evaluations"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6000  # evaluations continue where the checkpoint was
    with np.load(state_path.parent / "actors" / "expert.npz") as arrays:
        assert np.isfinite(GaussianActor.from_arrays(dict(arrays)).act(np.zeros((1, 11)))).all()
    teacher = SACTeacher(state_path.parent, TeacherConfig("hopper", budget_steps=6000, **TEACHER), lambda: None)
    log = teacher.transitions()
    assert len(log["rewards"]) == 6000 and state["cuts"] == [killed_at - 1]
    assert log["timeouts"][killed_at - 1] or log["terminals"][killed_at - 1]  # the episode the kill cut ends there
    assert len(list(state_path.parent.glob("model-*.zip"))) == 1
    assert check_file(path)["rows"] == 200


def test_resuming_with_other_teacher_settings_is_refused(made):
    out, _ = made
    with pytest.raises(DatasetError, match="trained with other settings"):
        generate_locomotion_dataset("hopper-medium-v5", out, transitions=100, workers=0, medium_return=EASY,
                                    teacher_budget=3000, teacher_settings={**TEACHER, "learning_starts": 400},
                                    progress=False)
