"""The offline training loop: chunks of jitted updates under `lax.scan`, periodic evaluation over
transport budgets, atomic checkpoints, resumable runs, and a divergence guard."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import vgf
from vgf.agents import config_from_dict, get_agent, make_config
from vgf.data import Dataset, load_task_dataset
from vgf.envs import TaskSpec, make_env, task_spec
from vgf.evaluation import EnvPool, evaluate
from vgf.training.checkpoint import (
    atomic_write_text,
    list_checkpoints,
    load_latest_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from vgf.training.logger import MetricsLogger


class TrainingDiverged(RuntimeError):
    """A loss or parameter became non-finite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of the last logged step was written."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted; checkpoint saved at step {step}. Resume with: vgf train --resume {run_dir}")
        self.run_dir, self.step = run_dir, step


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    agent: str
    task: str
    run_dir: str
    preset: str = "cpu-small"
    steps: int = 10_000
    eval_every: int = 5_000
    log_every: int = 500
    seed: int = 0
    data_dir: str = "data"
    eval_budgets: tuple[int, ...] = (0, 1, 2, 4)
    eval_episodes: int = 10
    eval_workers: int = 0
    keep_checkpoints: int = 3
    checkpoint_every: int | None = None  # None: at every evaluation
    overrides: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> "TrainSettings":
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be >= 0, got {self.steps}")
        if self.eval_every <= 0:
            problems.append(f"eval_every must be > 0, got {self.eval_every}")
        if self.log_every <= 0:
            problems.append(f"log_every must be > 0, got {self.log_every}")
        if self.eval_episodes <= 0:
            problems.append(f"eval_episodes must be > 0, got {self.eval_episodes}")
        if not self.eval_budgets or min(self.eval_budgets) < 0 or len(set(self.eval_budgets)) != len(self.eval_budgets):
            problems.append(f"eval_budgets must be distinct non-negative integers, got {list(self.eval_budgets)}")
        if self.eval_workers < 0:
            problems.append(f"eval_workers must be >= 0, got {self.eval_workers}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            problems.append(f"checkpoint_every must be > 0, got {self.checkpoint_every}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.eval_every

    def next_boundary(self, step: int) -> int:
        """The end of the chunk that starts at `step`: the next log, evaluation or checkpoint step, or the last step.

        A pure function of the step, so a resumed run cuts its updates into the same chunks as an uninterrupted one.
        """
        intervals = (self.log_every, self.eval_every, self.checkpoint_interval)
        return min(self.steps, *((step // interval + 1) * interval for interval in intervals))


@functools.partial(jax.jit, static_argnames=("num_updates", "batch_size"))
def train_chunk(agent, data: dict[str, jax.Array], key, num_updates: int, batch_size: int):
    """`num_updates` updates in one compiled call; batches are drawn on the device inside the scan.

    Returns the new agent and each metric averaged over the chunk.
    """
    size = data["observations"].shape[0]

    def body(carry, step_key):
        index = jax.random.randint(step_key, (batch_size,), 0, size)
        return carry.update(jax.tree_util.tree_map(lambda x: x[index], data))

    agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_updates))
    return agent, jax.tree_util.tree_map(jnp.mean, infos)


def chunk_key(seed: int, step: int) -> jax.Array:
    """The sampling key for the chunk that starts at `step`: a pure function of (seed, step), so resumes are exact."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + 1_000_003), step)


def make_policy(agent, seed: int) -> Callable:
    """Wrap `agent.act` as an evaluation policy: numpy in, numpy out, its own key sequence."""
    calls = iter(range(1 << 62))

    def policy(observations: np.ndarray, budgets: np.ndarray):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), next(calls))
        actions, aux = agent.act(jnp.asarray(observations), key, jnp.asarray(budgets), max_steps=int(budgets.max()))
        return np.asarray(actions), {name: np.asarray(value) for name, value in aux.items()}

    return policy


def evaluate_agent(agent, task: str, budgets, episodes: int, seed: int = 0, pool: EnvPool | None = None, progress=False):
    """Success rate, return and displacement per transport budget, all budgets in one batched pass."""
    return evaluate(
        functools.partial(make_env, task),
        make_policy(agent, seed),
        list(budgets),
        episodes,
        seed=seed,
        envs=pool,
        progress=progress,
    )


def eval_row(results: dict[int, dict[str, float]]) -> dict[str, float]:
    row = {}
    for budget, stats in results.items():
        for name in ("success", "return", "displacement", "length"):
            if name in stats:
                row[f"eval/budget_{budget}/{name}"] = stats[name]
    return row


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_dataset_matches(dataset: Dataset, spec: TaskSpec) -> None:
    if (dataset.obs_dim, dataset.action_dim) != (spec.obs_dim, spec.action_dim):
        raise ValueError(
            f"dataset {dataset.source} has observation dim {dataset.obs_dim} and action dim {dataset.action_dim}, "
            f"but task {spec.task!r} expects observation dim {spec.obs_dim} and action dim {spec.action_dim}"
        )


def new_agent(settings: TrainSettings, config, obs_dim: int, action_dim: int):
    """The agent at step 0. Initialised in one compiled call: the same values as eager `create`, in a fraction of the
    start-up time (eager initialisation compiles every small op of it on its own)."""
    create = jax.jit(get_agent(settings.agent).create, static_argnums=(0, 1, 2, 3))
    return create(config, obs_dim, action_dim, settings.seed)


def write_run_info(run_dir: Path, settings: TrainSettings, config, dataset: Dataset) -> None:
    info = {
        "settings": dataclasses.asdict(settings),
        "agent_config": dataclasses.asdict(config),
        "obs_dim": dataset.obs_dim,
        "action_dim": dataset.action_dim,
        "dataset": {"source": dataset.source, "transitions": dataset.size},
        "git_revision": git_revision(),
        "vgf_version": vgf.__version__,
        "jax_version": jax.__version__,
        "python": platform.python_version(),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(info, indent=2))


def settings_from_run(run_dir: Path) -> tuple[TrainSettings, Any, dict]:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a vgf run directory")
    info = json.loads(path.read_text())
    values = dict(info["settings"])
    values["eval_budgets"] = tuple(values["eval_budgets"])
    values["run_dir"] = str(run_dir)  # where the run is now, which need not be where it was started
    settings = TrainSettings(**values)
    return settings, config_from_dict(settings.agent, info["agent_config"]), info


def load_run(run_dir: Path):
    """(settings, agent at its latest checkpoint, step) for an existing run directory."""
    settings, config, info = settings_from_run(run_dir)
    template = new_agent(settings, config, info["obs_dim"], info["action_dim"])
    step, agent, _ = load_latest_checkpoint(Path(run_dir) / "checkpoints", template)
    return settings, agent, step


def check_resumable(run_dir: Path, settings: TrainSettings, config, newest_step: int) -> None:
    """Refuse to resume a run directory that holds another run (agent, task, seed or agent config) or is past `steps`."""
    previous, previous_config, _ = settings_from_run(run_dir)
    ours = (settings.agent, settings.task, settings.seed, config)
    if (previous.agent, previous.task, previous.seed, previous_config) != ours:
        raise ValueError(
            f"{run_dir} holds a different run ({previous.agent} on {previous.task}, seed {previous.seed}, "
            f"preset {previous.preset}, overrides {previous.overrides}); choose another --run-dir or resume it with --resume"
        )
    if newest_step > settings.steps:
        raise ValueError(f"{run_dir} is at step {newest_step}, past the requested {settings.steps} steps")


@jax.jit
def all_finite(tree) -> jax.Array:
    floats = [leaf for leaf in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.isfinite(leaf).all() for leaf in floats]))


def check_finite(info: dict[str, float], agent, step: int, boundary: int, kept: tuple[int, Path]) -> None:
    bad = [f"{name}={value}" for name, value in info.items() if not math.isfinite(value)]
    if bad or not all_finite(agent):
        what = f"non-finite loss ({', '.join(bad)})" if bad else "a non-finite parameter"
        raise TrainingDiverged(
            f"training diverged at step {boundary}: {what} in updates {step + 1}-{boundary}; "
            f"stopped, keeping the last good checkpoint (step {kept[0]}): {kept[1]}"
        )


def train(
    settings: TrainSettings,
    progress: Callable[[int, int, dict], None] | None = None,
    dataset: Dataset | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict:
    """Train (or resume) the run in `settings.run_dir`; returns the final evaluation row.

    Every setting, the agent config and the task name are checked before any data is loaded. An existing run
    directory with checkpoints is resumed from its newest readable one; the metric rows after that step are dropped
    and written again, so a run killed at any point and resumed logs the same rows and ends with the same parameters.
    Each row is written before the checkpoint of its step, so every checkpoint has all the rows up to it.
    `on_start(step)` is called with the step training starts from, `progress(step, steps, row)` after each row.
    """
    settings.validate()
    config = make_config(settings.agent, settings.preset, settings.overrides)
    spec = task_spec(settings.task)
    run_dir = Path(settings.run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    checkpoints = list_checkpoints(checkpoint_dir)
    if checkpoints:
        check_resumable(run_dir, settings, config, checkpoints[-1][0])
    dataset = dataset if dataset is not None else load_task_dataset(settings.task, settings.data_dir)
    check_dataset_matches(dataset, spec)

    agent = new_agent(settings, config, dataset.obs_dim, dataset.action_dim)
    remove_temporaries(run_dir)
    remove_temporaries(checkpoint_dir)
    if checkpoints:
        start, agent, path = load_latest_checkpoint(checkpoint_dir, agent)
    write_run_info(run_dir, settings, config, dataset)  # before the first checkpoint: a run with one has its config
    if not checkpoints:
        start, path = 0, save_checkpoint(checkpoint_dir, 0, agent, settings.keep_checkpoints)
    logger = MetricsLogger(run_dir)
    logger.truncate_after(start)
    if on_start is not None:
        on_start(start)

    data = {name: jnp.asarray(array) for name, array in dataset.arrays().items()}
    budgets = settings.eval_budgets if settings.agent != "bc" else (0,)
    last_eval: dict[str, float] = {}
    step, kept = start, (start, path)
    logged = (step, agent)  # the newest state whose metric row is written: what an interrupt saves
    pool = EnvPool(functools.partial(make_env, spec.task), workers=settings.eval_workers)
    try:
        while step < settings.steps:
            boundary = settings.next_boundary(step)
            began = time.perf_counter()
            candidate, info = train_chunk(agent, data, chunk_key(settings.seed, step), boundary - step, config.batch_size)
            info = {name: float(value) for name, value in info.items()}
            check_finite(info, candidate, step, boundary, kept)
            agent, elapsed = candidate, time.perf_counter() - began
            row: dict[str, Any] = {"step": boundary, "updates_per_s": (boundary - step) / elapsed}
            row.update({f"train/{name}": value for name, value in info.items()})
            step = boundary
            if step % settings.eval_every == 0 or step == settings.steps:
                results = evaluate_agent(agent, settings.task, budgets, settings.eval_episodes, settings.seed, pool)
                last_eval = eval_row(results)
                row.update(last_eval)
            logger.log(row)
            logged = (step, agent)
            if step % settings.checkpoint_interval == 0 or step == settings.steps:
                kept = (step, save_checkpoint(checkpoint_dir, step, agent, settings.keep_checkpoints))
            if progress is not None:
                progress(step, settings.steps, row)
    except KeyboardInterrupt:
        save_checkpoint(checkpoint_dir, logged[0], logged[1], settings.keep_checkpoints)
        raise TrainingInterrupted(run_dir, logged[0]) from None
    finally:
        pool.close()
    if not last_eval:
        last_eval = next((eval_row_from(row) for row in reversed(logger.rows) if eval_row_from(row)), {})
    plot_learning(run_dir, logger.rows, settings)
    return last_eval


def eval_row_from(row: dict) -> dict:
    return {key: value for key, value in row.items() if key.startswith("eval/")}


def plot_learning(run_dir: Path, rows: list[dict], settings: TrainSettings) -> Path | None:
    from vgf.evaluation import plot_learning_curve

    if not any(eval_row_from(row) for row in rows):
        return None
    return plot_learning_curve(
        [row for row in rows if eval_row_from(row)],
        run_dir / "plots" / "learning_curve.png",
        title=f"{settings.agent} on {settings.task} (seed {settings.seed})",
    )
