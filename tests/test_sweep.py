"""Grids of runs (`vgf.sweep`): grid expansion and sweep-file validation, and the Ray runner on a real local Ray
instance with two tiny bandit runs and one that fails in its worker (retried once, reported, the others unaffected),
then a relaunch that skips the finished runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys

import pytest
from rich.console import Console

from vgf.cli import SweepDisplay, main
from vgf.sweep import Grid, GridError, RunSpec, load_sweep, parse_sweep, write_report

# Each tiny run: 20 updates, evaluated at steps 10 and 20 with 2 episodes (compilation is most of its time).
TINY = dict(steps=20, preset="bandit", eval_every=10, eval_episodes=2, eval_budgets=(0,))
BENCH_FLAGS = ["--tasks", "bandit", "--seeds", "0", "--steps", "20", "--preset", "bandit", "--eval-every", "10",
               "--eval-episodes", "2", "--eval-budgets", "0"]


def minimal(**extra):
    return {"agents": ["vgf"], "tasks": ["bandit"], "seeds": [0], "steps": 10, "preset": "bandit", **extra}


# ----- grids and sweep files (no Ray) -----


def test_grid_expands_hyperparameters_only_for_agents_that_have_them():
    grid = Grid(agents=("vgf", "bc"), tasks=("bandit",), seeds=(0, 1), steps=100, preset="bandit",
                overrides={"batch_size": 64}, hyperparameters={"vgf_alpha": (0.1, 0.5)})
    specs = grid.runs()
    assert [spec.name for spec in specs] == [
        "vgf-bandit-s0-batch_size=64-vgf_alpha=0.1", "vgf-bandit-s1-batch_size=64-vgf_alpha=0.1",
        "vgf-bandit-s0-batch_size=64-vgf_alpha=0.5", "vgf-bandit-s1-batch_size=64-vgf_alpha=0.5",
        "bc-bandit-s0-batch_size=64", "bc-bandit-s1-batch_size=64",
    ]
    vgf_spec, bc_spec = specs[0], specs[-1]
    assert vgf_spec.eval_budgets == (0, 1, 2, 4, 8)  # plus the bandit preset's default budget, 8
    assert bc_spec.eval_budgets == (0,)  # BC does not use budgets
    assert vgf_spec.eval_every == 10  # ten evaluations by default
    settings = vgf_spec.train_settings("/results")
    assert settings.run_dir == "/results/vgf-bandit-s0-batch_size=64-vgf_alpha=0.1"
    assert settings.overrides == {"batch_size": 64, "vgf_alpha": 0.1}


def test_the_default_budget_added_is_the_tasks_own():
    specs = Grid(agents=("vgf",), tasks=("d4rl:hopper-medium-replay-v5", "cube-single-play-singletask-task1"),
                 seeds=(0,), steps=100, preset="cpu-small", eval_budgets=(0,)).runs()
    assert {spec.task: spec.eval_budgets for spec in specs} == {
        "d4rl:hopper-medium-replay-v5": (0, 3), "cube-single-play-singletask-task1": (0,)}  # cpu-d4rl acts with 3


def test_each_run_steps_its_envs_on_its_share_of_the_cores():
    """`vgf bench` runs cores / cpus_per_run runs at once: each one's evaluation gets cpus_per_run env workers."""
    from vgf.sweep.grid import Resources
    from vgf.sweep.runner import worker_environment

    assert worker_environment(Resources(1.0, 0.0))["VGF_ENV_WORKERS"] == "1"
    assert worker_environment(Resources(2.0, 0.0))["VGF_ENV_WORKERS"] == "2"
    assert worker_environment(Resources(0.5, 0.0))["VGF_ENV_WORKERS"] == "1"


def test_runs_sharing_a_gpu_each_preallocate_their_share_of_what_one_run_would(monkeypatch):
    from jaxlib.xla_client import generate_pjrt_gpu_plugin_options  # the options JAX's CUDA plugin starts with

    from vgf.sweep.grid import Resources
    from vgf.sweep.runner import worker_environment

    quarter = worker_environment(Resources(1.0, 0.25))
    assert quarter["XLA_CLIENT_MEM_FRACTION"] == "0.1875" and 4 * 0.1875 == 0.75  # XLA's default for one process
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")  # exported in the shell that launched the sweep
    for name, value in quarter.items():
        monkeypatch.setenv(name, value)
    options = generate_pjrt_gpu_plugin_options()
    assert (options["memory_fraction"], options["preallocate"]) == (0.1875, True)

    assert worker_environment(Resources(1.0, 0.5))["XLA_CLIENT_MEM_FRACTION"] == "0.375"
    whole = worker_environment(Resources(1.0, 1.0))  # a GPU of its own: XLA's defaults
    assert not {"XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS"} & set(whole)
    none = worker_environment(Resources(1.0, 0.0))
    assert none["JAX_PLATFORMS"] == "cpu" and "XLA_CLIENT_MEM_FRACTION" not in none


def test_run_names_are_file_safe():
    spec = RunSpec(agent="vgf", task="bandit", seed=3, preset="bandit", steps=10, overrides=(("hidden_dims", (64, 64)),))
    assert spec.name == "vgf-bandit-s3-hidden_dims=64x64"


@pytest.mark.parametrize(
    "raw, message",
    [
        (minimal(agents=["vgf", "dqn"]), "agents: unknown agent 'dqn'"),
        (minimal(tasks=["bandt"]), "tasks: unknown task 'bandt'"),
        (minimal(preset="huge"), "preset: unknown preset 'huge'"),
        (minimal(seeds=[0, "1"]), "seeds: expected a list of integers"),
        (minimal(steps=0), "steps: must be > 0"),
        (minimal(hyperparameters={"vgf_alpah": [0.1]}), "hyperparameters.vgf_alpah: no agent in `agents` has a config field"),
        (minimal(hyperparameters={"vgf_alpha": [0.1, -1.0]}), "hyperparameters.vgf_alpha: value -1.0: invalid VGF config"),
        (minimal(hyperparameters={"vgf_alpha": 0.1}), "hyperparameters.vgf_alpha: expected a non-empty list"),
        (minimal(set={"num_particles": 0}), "set: invalid VGF config: num_particles=0"),
        (minimal(eval={"episodes": 0}), "eval: eval_episodes must be > 0"),
        (minimal(eval={"every": 10, "budget": [0]}), "eval: unknown key(s) ['budget']"),
        (minimal(resources={"cpus": 0}), "resources: cpus must be > 0"),
        (minimal(retries=-1), "retries: expected a non-negative integer"),
        (minimal(keep_checkpoints=0), "keep_checkpoints: expected a positive integer"),
        (minimal(keep_every=0), "keep_every: expected a positive integer"),
        (minimal(checkpoint_every="10"), "checkpoint_every: expected a positive integer"),
        (minimal(step=10), "unknown key(s) ['step']"),
        ({"agents": ["vgf"], "tasks": ["bandit"]}, "missing key(s) ['seeds', 'steps']"),
        (["vgf"], "expected a mapping"),
    ],
)
def test_sweep_file_errors_name_the_key(raw, message):
    with pytest.raises(GridError) as error:
        parse_sweep(raw, "my.yaml")
    assert str(error.value).startswith("my.yaml: ")
    assert message in str(error.value)


def test_example_sweep_file_is_valid():
    sweep = load_sweep(os.path.join(os.path.dirname(__file__), "..", "examples", "sweep.yaml"))
    specs = sweep.grid.runs()
    assert len(specs) == 3 + 2 * 2 * 3  # BC per seed; VGF per seed and hyperparameter combination
    assert str(sweep.results_dir) == "runs/sweep-bandit" and sweep.retries == 1


def test_yaml_lists_become_config_tuples(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("agents: [bc]\ntasks: [bandit]\nseeds: [0]\nsteps: 10\npreset: bandit\nhyperparameters:\n  hidden_dims: [[32, 32], [64]]\n")
    sweep = load_sweep(path)
    assert [spec.name for spec in sweep.grid.runs()] == ["bc-bandit-s0-hidden_dims=32x32", "bc-bandit-s0-hidden_dims=64"]
    assert sweep.results_dir.name == "sweep-grid"


def test_kept_checkpoints_reach_every_run(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("agents: [vgf, bc]\ntasks: [bandit]\nseeds: [0]\nsteps: 10\npreset: bandit\nkeep_checkpoints: 11\n"
                    "checkpoint_every: 2\nkeep_every: 5\n")
    specs = load_sweep(path).grid.runs()
    settings = [spec.train_settings(tmp_path) for spec in specs]
    assert [(s.keep_checkpoints, s.checkpoint_every, s.keep_every) for s in settings] == [(11, 2, 5), (11, 2, 5)]
    assert RunSpec(agent="bc", task="bandit", seed=0, preset="bandit", steps=10).train_settings(tmp_path).keep_checkpoints == 3


def test_bench_errors_name_the_flag(capsys):
    assert main(["bench", "--agents", "vgf,dqn", *BENCH_FLAGS]) == 2
    assert "--agents: unknown agent 'dqn'" in capsys.readouterr().err
    assert main(["bench", "--agents", "vgf", *BENCH_FLAGS, "--keep-checkpoints", "0"]) == 2
    assert "--keep-checkpoints: keep_checkpoints must be >= 1, got 0" in " ".join(capsys.readouterr().err.split())
    assert main(["bench", "--agents", "vgf", *BENCH_FLAGS, "--keep-every", "-5"]) == 2
    assert "--keep-every: keep_every must be > 0, got -5" in " ".join(capsys.readouterr().err.split())


def test_display_lists_runs_by_state():
    from vgf.sweep.runner import RunState, RunStatus

    statuses = [
        RunStatus(RunSpec(agent="vgf", task="bandit", seed=0, **TINY), RunState.RUNNING, attempts=2, step=10),
        RunStatus(RunSpec(agent="bc", task="bandit", seed=0, **TINY), RunState.DONE, attempts=1),
        RunStatus(RunSpec(agent="bc", task="bandit", seed=1, **TINY), RunState.FAILED, attempts=2, error="boom"),
    ]
    console = Console(record=True, width=120)
    display = SweepDisplay(console)
    display.update(statuses)
    console.print(display)
    text = console.export_text()
    assert "running    1  vgf-bandit-s0 (10/20, attempt 2)" in text
    assert "done       1  bc-bandit-s0" in text and "failed     1  bc-bandit-s1" in text and "pending    0" in text
    assert "2/3 runs finished" in text


def write_run(results, spec, checkpoint_step, row, **stored_settings):
    """A run directory as `train` leaves it (empty checkpoint files: only their names are read here)."""
    run_dir = spec.run_dir(results)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / f"step_{checkpoint_step:09d}.msgpack").write_bytes(b"")
    settings = {**dataclasses.asdict(spec.train_settings(results)), **stored_settings}
    (run_dir / "config.json").write_text(json.dumps({"settings": settings}))
    (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")


@pytest.mark.parametrize(
    "checkpoint_step, row, stored, finished",
    [
        (20, {"step": 20, "eval/budget_0/success": 1.0}, {}, True),
        (10, {"step": 10, "eval/budget_0/success": 1.0}, {}, False),  # interrupted: resumed, not skipped
        (20, {"step": 20, "train/loss": 0.1}, {}, False),  # killed between its last checkpoint and evaluation row
        (20, {"step": 20, "eval/budget_0/success": 1.0}, {"preset": "paper"}, False),  # another run: training says so
    ],
)
def test_finished_runs_are_recognised(tmp_path, checkpoint_step, row, stored, finished):
    from vgf.sweep.runner import is_finished

    spec = RunSpec(agent="bc", task="bandit", seed=0, overrides=(("batch_size", 64),), **TINY)
    write_run(tmp_path, spec, checkpoint_step, row, **stored)
    assert is_finished(spec, tmp_path) is finished


def test_a_finished_run_of_an_older_preset_is_not_skipped(tmp_path):
    """A run trained before a preset changed (here: FQL's networks were ReLU and its puzzle alpha 300) is another run
    now: not skipped as finished, so training it reports the clash instead of the grid reusing its results."""
    from vgf.agents import make_config
    from vgf.sweep.runner import is_finished

    spec = RunSpec(agent="fql", task="puzzle-3x3-play-singletask-task1", seed=0, **{**TINY, "preset": "cpu-small"})
    row = {"step": 20, "eval/budget_0/success": 1.0}
    write_run(tmp_path, spec, 20, row)
    path = spec.run_dir(tmp_path) / "config.json"
    info = json.loads(path.read_text())
    today = dataclasses.asdict(make_config("fql", "cpu-small", task=spec.task))
    path.write_text(json.dumps({**info, "agent_config": today}))
    assert is_finished(spec, tmp_path)
    old = {key: value for key, value in today.items() if key != "activation"}
    for stored in ({**old, "alpha": 1000.0}, {**today, "alpha": 300.0}):
        path.write_text(json.dumps({**info, "agent_config": stored}))
        assert not is_finished(spec, tmp_path), stored


# ----- the runner on a real local Ray instance -----


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)  # a GPU in name only: none is used
    yield ray
    ray.shutdown()


def test_a_run_another_launch_holds_is_refused_without_a_record(local_ray, tmp_path):
    from vgf.sweep import RunState, run_grid
    from vgf.training.lock import hold_run_directory

    results = tmp_path / "results"
    spec = RunSpec(agent="bc", task="bandit", seed=0, **TINY)
    with hold_run_directory(spec.run_dir(results)):
        (status,) = run_grid([spec], results, retries=1)
        assert (status.state, status.attempts) == (RunState.FAILED, 1)
        assert "RunDirectoryInUse" in status.error and f"pid {os.getpid()}" in status.error
        assert sorted(path.name for path in spec.run_dir(results).iterdir()) == ["run.lock"]


def test_a_worker_sharing_a_gpu_starts_with_its_memory_share_before_it_imports_jax(local_ray):
    """A worker started with a run's options, holding a quarter of the fixture's one GPU."""
    from vgf.sweep.grid import Resources
    from vgf.sweep.runner import run_options

    def worker_start():
        jax_imported = "jax" in sys.modules
        from jaxlib.xla_client import generate_pjrt_gpu_plugin_options

        options = generate_pjrt_gpu_plugin_options()
        return jax_imported, os.environ.get("CUDA_VISIBLE_DEVICES"), options["memory_fraction"], options["preallocate"]

    task = local_ray.remote(worker_start).options(**run_options(Resources(1.0, 0.25)))
    assert local_ray.get(task.remote()) == (False, "0", 0.1875, True)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_runner_retries_a_failure_once_reports_it_and_skips_finished_runs(local_ray, tmp_path, capsys):
    from vgf.sweep import RunState, run_grid

    results = tmp_path / "results"
    good = Grid(agents=("vgf", "bc"), tasks=("bandit",), seeds=(0,), **{k: v for k, v in TINY.items() if k != "eval_budgets"},
                eval_budgets=(0,)).runs()
    # Passes every check before launch, then fails in its worker: the dataset file does not exist.
    broken = RunSpec(agent="bc", task="cube-single-play-singletask-task1", seed=0, data_dir=str(tmp_path / "no-data"), **TINY)
    seen = []
    statuses = run_grid([*good, broken], results, retries=1, on_change=lambda s: seen.append({x.spec.name: x.state for x in s}))

    by_name = {status.spec.name: status for status in statuses}
    assert [by_name[spec.name].state for spec in good] == [RunState.DONE, RunState.DONE]
    assert all(by_name[spec.name].attempts == 1 for spec in good)
    failed = by_name[broken.name]
    assert (failed.state, failed.attempts) == (RunState.FAILED, 2)
    assert "DatasetError" in failed.error
    record = json.loads((results / broken.name / "failure.json").read_text())
    assert [attempt["attempt"] for attempt in record["attempts"]] == [1, 2]
    assert "in train_run" in record["attempts"][0]["traceback"] and "DatasetError" in record["attempts"][1]["traceback"]
    assert any(snapshot[good[0].name] is RunState.RUNNING for snapshot in seen)  # reported while it ran

    report = write_report(results)
    rows = {(r["agent"], r["budget_choice"]): r for r in read_csv(results / "results.csv")}
    assert set(rows) == {("vgf", "default"), ("vgf", "best"), ("bc", "only")}
    assert rows[("vgf", "default")]["budget"] == "8" and rows[("vgf", "default")]["seeds"] == "1"
    assert all(r["steps"] == "20" and float(r["score_last_std"]) == 0.0 for r in rows.values())
    assert [problem.name for problem in report.problems] == [broken.name]
    assert "failed after 2 attempt(s): DatasetError" in (results / "results.md").read_text()

    # A relaunch trains nothing that finished: same files, same times; the failed run is tried (twice) again.
    finished_files = [results / spec.name / name for spec in good for name in ("metrics.jsonl", "checkpoints/step_000000020.msgpack")]
    times = [path.stat().st_mtime_ns for path in finished_files]
    again = {status.spec.name: status for status in run_grid([*good, broken], results, retries=1)}
    assert all(again[spec.name].skipped and again[spec.name].attempts == 0 for spec in good)
    assert (again[broken.name].state, again[broken.name].attempts) == (RunState.FAILED, 2)
    assert [path.stat().st_mtime_ns for path in finished_files] == times

    # `vgf bench` over the same results directory: nothing left to train, so just the table (exit 1: a run failed).
    capsys.readouterr()
    assert main(["bench", "--agents", "vgf,bc", *BENCH_FLAGS, "--results-dir", str(results)]) == 1
    out = capsys.readouterr().out
    assert "skipping 2 finished run(s)" in out and "not in the table" in out
    assert [path.stat().st_mtime_ns for path in finished_files] == times
