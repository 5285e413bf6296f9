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
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import vgf
from vgf.agents import config_from_dict, get_agent, make_config, needs_next_actions
from vgf.data import Dataset, d4rl_normalized_score, load_task_datasets
from vgf.envs import TaskSpec, make_env, task_spec
from vgf.evaluation import EnvPool, env_workers, evaluate
from vgf.training.checkpoint import (
    atomic_write_text,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from vgf.training.logger import MetricsLogger
from vgf.training.lock import hold_run_directories
from vgf.training.policy import make_policy
from vgf.training.tracking import TrackerError, check_loggers, open_run_logger, parse_loggers


class TrainingDiverged(RuntimeError):
    """A loss or parameter became non-finite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of the last logged step was written in every run directory."""

    def __init__(self, run_dirs: list[Path], step: int):
        resume = " and ".join(f"vgf train --resume {run_dir}" for run_dir in run_dirs)
        again = "" if len(run_dirs) == 1 else " (or run the same --seeds command again)"
        super().__init__(f"interrupted; checkpoint saved at step {step}. Resume with: {resume}{again}")
        self.run_dirs, self.step = run_dirs, step


REPLAY_MODES = ("dataset", "rlpd", "online")  # how online training batches mix dataset and online data


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    agent: str
    task: str | None  # None: a dataset with no environment (`vgf.fit`), trained on without evaluation
    run_dir: str
    preset: str = "cpu-small"
    steps: int = 10_000
    eval_every: int = 5_000
    log_every: int = 500
    seed: int = 0
    data_dir: str = "data"
    eval_budgets: tuple[int, ...] = (0, 1, 2, 4)
    eval_episodes: int = 10
    eval_workers: int | None = None  # env worker processes; None: sized to the machine (vgf.evaluation.env_workers)
    keep_checkpoints: int = 3
    checkpoint_every: int | None = None  # None: at every evaluation
    strict: bool = False  # refuse dataset actions outside the action box instead of clipping them
    overrides: dict = dataclasses.field(default_factory=dict)
    # Offline-to-online (vgf.training.online): env steps after the offline `steps`, counted on from them.
    online_steps: int = 0
    replay: str = "rlpd"  # 'dataset' (one buffer of dataset + online data) | 'rlpd' (half and half) | 'online'
    online_envs: int = 1  # environments stepped together; each env step is one transition
    updates_per_env_step: int = 1
    explore_vgf_steps: int = 0  # transport budget when acting online (0: best of N reference particles by Q)
    normalize_rewards: bool = False  # scale rewards (dataset and online) so dataset episode returns span 1000
    loggers: tuple[str, ...] = ("csv",)  # where metric rows go: csv (always), tensorboard, wandb (vgf.training.tracking)
    group: str | None = None  # the W&B group of the run: a bench's or sweep's results directory, seeds trained together

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
        if self.eval_workers is not None and self.eval_workers < 0:
            problems.append(f"eval_workers must be >= 0, got {self.eval_workers}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            problems.append(f"checkpoint_every must be > 0, got {self.checkpoint_every}")
        if self.online_steps < 0:
            problems.append(f"online_steps must be >= 0, got {self.online_steps}")
        if self.online_steps and self.task is None:
            problems.append("online_steps need a task: an environment to act in")
        if self.replay not in REPLAY_MODES:
            problems.append(f"replay must be one of {', '.join(REPLAY_MODES)}, got {self.replay!r}")
        if self.online_envs < 1:
            problems.append(f"online_envs must be >= 1, got {self.online_envs}")
        elif self.online_steps % self.online_envs:
            problems.append(f"online_steps ({self.online_steps}) must be a multiple of online_envs ({self.online_envs})")
        if self.updates_per_env_step < 1:
            problems.append(f"updates_per_env_step must be >= 1, got {self.updates_per_env_step}")
        if self.explore_vgf_steps < 0:
            problems.append(f"explore_vgf_steps must be >= 0, got {self.explore_vgf_steps}")
        try:
            parse_loggers(self.loggers)
        except TrackerError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def total_steps(self) -> int:
        """The last step of the run: the offline updates, then the online env steps."""
        return self.steps + self.online_steps

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


@functools.partial(jax.jit, static_argnames=("num_updates", "batch_size"))
def train_chunk_seeds(agents, data: dict[str, jax.Array], keys, num_updates: int, batch_size: int):
    """`train_chunk` for agents stacked on a leading seed axis, one sampling key each, in one compiled call."""
    chunk = functools.partial(train_chunk.__wrapped__, num_updates=num_updates, batch_size=batch_size)
    return jax.vmap(chunk, in_axes=(0, None, 0))(agents, data, keys)


VALIDATION_BATCHES = 8  # fixed held-out batches behind the `val/` metrics


def validation_batches(dataset: Dataset, batch_size: int, seed: int, next_actions: bool) -> dict[str, jax.Array]:
    """`VALIDATION_BATCHES` batches of held-out transitions, stacked [batches, batch_size, ...]: drawn once per run
    (from `seed`), so the `val/` metrics of its evaluations differ only by what the agent has learnt."""
    index = np.random.default_rng(seed).integers(0, dataset.size, size=(VALIDATION_BATCHES, batch_size))
    arrays = dataset.arrays()
    if next_actions:
        arrays["next_actions"] = dataset.next_actions()
    return {name: jnp.asarray(array[index]) for name, array in arrays.items()}


@jax.jit
def validation_metrics(agent, batches: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The metrics an update reports (losses, mean Q, ...) on each held-out batch, averaged; the agent is unchanged:
    the updated state is dropped, and an update computes its losses before it steps."""
    infos = jax.lax.map(lambda batch: agent.update(batch)[1], batches)
    return jax.tree_util.tree_map(jnp.mean, infos)


def chunk_key(seed: int, step: int) -> jax.Array:
    """The sampling key for the chunk that starts at `step`: a pure function of (seed, step), so resumes are exact."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + 1_000_003), step)


def evaluate_agent(agent, task: str, budgets, episodes: int, seed: int = 0, pool: EnvPool | None = None, progress=False):
    """Success rate, return and displacement per transport budget, all budgets in one batched pass.

    D4RL tasks also get `normalized_score`: D4RL's normalised score of the mean return.
    """
    results = evaluate(
        functools.partial(make_env, task),
        make_policy(agent, seed, budgets),
        list(budgets),
        episodes,
        seed=seed,
        envs=pool,
        progress=progress,
    )
    reference = task_spec(task).d4rl_reference
    if reference is not None:
        for stats in results.values():
            stats["normalized_score"] = d4rl_normalized_score(reference, stats["return"])
    return results


def eval_row(results: dict[int, dict[str, float]]) -> dict[str, float]:
    row = {}
    for budget, stats in results.items():
        for name in ("success", "return", "normalized_score", "displacement", "length"):
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


def new_agents(settings: TrainSettings, config, obs_dim: int, action_dim: int, seeds: tuple[int, ...]):
    """The agents of `seeds` at step 0, stacked on a leading seed axis, initialised in one compiled call.

    One compiled `create` is faster to start than eager initialisation (which compiles every small op on its own), and
    the seed is traced, not static, so every seed shares that compilation; the values are those of eager `create`.
    """
    return seeds_create(settings.agent)(config, obs_dim, action_dim, jnp.asarray(seeds, dtype=jnp.int32))


@functools.lru_cache(maxsize=None)
def seeds_create(agent: str) -> Callable:
    """The agent's `create`, vmapped over seeds and jitted once per process (later runs reuse its compilations)."""
    return jax.jit(jax.vmap(get_agent(agent).create, in_axes=(None, None, None, 0)), static_argnums=(0, 1, 2))


def new_agent(settings: TrainSettings, config, obs_dim: int, action_dim: int):
    """The agent of `settings.seed` at step 0."""
    return seed_slice(new_agents(settings, config, obs_dim, action_dim, (settings.seed,)), 0)


def seed_slice(agents, index: int):
    return jax.tree_util.tree_map(lambda x: x[index], agents)


def stack_seeds(agents: list):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *agents)


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
    values["loggers"] = tuple(values.get("loggers", ("csv",)))
    values["run_dir"] = str(run_dir)  # where the run is now, which need not be where it was started
    settings = TrainSettings(**values)
    return settings, config_from_dict(settings.agent, info["agent_config"]), info


def load_run(run_dir: Path, step: int | None = None):
    """(settings, agent, step) for an existing run directory: its newest checkpoint, or the one of `step`."""
    settings, config, info = settings_from_run(run_dir)
    template = new_agent(settings, config, info["obs_dim"], info["action_dim"])
    directory = Path(run_dir) / "checkpoints"
    if step is None:
        step, agent, _ = load_latest_checkpoint(directory, template)
        return settings, agent, step
    kept = dict(list_checkpoints(directory))
    if step not in kept:
        listing = ", ".join(map(str, kept)) or "none"
        raise FileNotFoundError(f"{directory} has no checkpoint of step {step} (kept steps: {listing}); "
                                "a run keeps its newest --keep-checkpoints of them")
    return settings, load_checkpoint(kept[step], template), step


def config_differences(stored, requested) -> list[str]:
    """'field (stored value there, requested value now)' for each field two configs of one agent differ in."""
    return [
        f"{field.name} ({getattr(stored, field.name)!r} there, {getattr(requested, field.name)!r} now)"
        for field in dataclasses.fields(requested)
        if getattr(stored, field.name) != getattr(requested, field.name)
    ]


def check_resumable(run_dir: Path, settings: TrainSettings, config, newest_step: int) -> None:
    """Refuse to resume a run directory that holds another run (agent, task, seed or agent config) or is past `steps`.

    The stored config is read through `config_from_dict` (the agent's LEGACY_VALUES), so a run written before a
    field was added compares with the value it was trained with: when today's preset differs (a new default, a
    per-environment value), it is refused with the fields named, never continued under settings it was not trained
    with.
    """
    previous, previous_config, _ = settings_from_run(run_dir)
    if (previous.agent, previous.task, previous.seed) != (settings.agent, settings.task, settings.seed):
        raise ValueError(
            f"{run_dir} holds a different run ({previous.agent} on {previous.task}, seed {previous.seed}, "
            f"preset {previous.preset}, overrides {previous.overrides}); choose another --run-dir or resume it with --resume"
        )
    if previous_config != config:
        differences = "; ".join(config_differences(previous_config, config))
        raise ValueError(
            f"{run_dir} holds a different run: its agent config (preset {previous.preset}, overrides "
            f"{previous.overrides}) differs from the one requested in {differences}. Choose another --run-dir, or "
            f"continue it as it was trained: the same `vgf train` command with --set NAME=VALUE for each field's value "
            f"there"
        )
    if newest_step > settings.total_steps:
        raise ValueError(f"{run_dir} is at step {newest_step}, past the requested {settings.total_steps} steps")
    if newest_step > previous.steps and settings.steps != previous.steps:
        raise ValueError(
            f"{run_dir} is in its online phase (step {newest_step}, after {previous.steps} offline steps); "
            f"its offline steps cannot change to {settings.steps}"
        )


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


@dataclasses.dataclass
class SeedRun:
    """One seed of a training call: its settings, run directory, metric log and newest checkpoint."""

    settings: TrainSettings
    logger: MetricsLogger | None = None
    kept: tuple[int, Path] | None = None
    last_eval: dict = dataclasses.field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.run_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def check_seed_group(group: list[TrainSettings]) -> None:
    """Valid settings for seeds trained together: each valid, differing only in seed and run directory, offline only."""
    if not group:
        raise ValueError("train_seeds needs at least one TrainSettings")
    for settings in group:
        settings.validate()
    check_loggers(group[0].loggers)  # a logger that cannot start stops the run here, before any data is loaded
    if len(group) > 1 and group[0].online_steps:
        raise ValueError("online steps train one seed at a time: run one `vgf train --seed S` per seed instead of --seeds")
    seeds = [settings.seed for settings in group]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds trained together must be distinct, got {seeds}")
    run_dirs = [str(Path(settings.run_dir).resolve()) for settings in group]
    if len(set(run_dirs)) != len(run_dirs):
        raise ValueError(f"each seed needs its own run directory, got {[settings.run_dir for settings in group]}")
    first = group[0]
    for settings in group[1:]:
        if dataclasses.replace(settings, seed=first.seed, run_dir=first.run_dir) != first:
            raise ValueError(
                f"seeds trained together must share every setting but seed and run directory: seed {settings.seed} "
                f"differs from seed {first.seed}"
            )


def restore_seeds(runs: list[SeedRun], agents) -> tuple[int, Any, list[Path | None]]:
    """The step to resume every seed from, the stacked agents at that step, and each seed's checkpoint path.

    Seeds save their checkpoints one after the other, so a run killed in between leaves some seeds one checkpoint
    ahead: all resume from the newest step every seed has a readable checkpoint of (the newer ones are redone).
    """
    template = seed_slice(agents, 0)
    latest = []
    for run in runs:
        if list_checkpoints(run.checkpoint_dir):
            latest.append(load_latest_checkpoint(run.checkpoint_dir, template))
        else:
            latest.append((0, None, None))
    start = min(step for step, _, _ in latest)
    restored, paths = [], []
    for index, (run, (step, agent, path)) in enumerate(zip(runs, latest)):
        if step != start or agent is None:
            older = dict(list_checkpoints(run.checkpoint_dir))
            if start == 0 and not older:
                agent, path = seed_slice(agents, index), None
            elif start not in older:
                raise ValueError(
                    f"seeds trained together must resume from one step: {run.run_dir} is at step {step} but another "
                    f"seed is at step {start}, and {run.run_dir} keeps no checkpoint of step {start}; resume the seeds "
                    f"one at a time (vgf train --resume RUN_DIR) or give this run new run directories"
                )
            else:
                agent, path = load_checkpoint(older[start], template), older[start]
        restored.append(agent)
        paths.append(path)
    return start, stack_seeds(restored), paths


def train(
    settings: TrainSettings,
    progress: Callable[[int, int, dict], None] | None = None,
    dataset: Dataset | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict:
    """Train (or resume) the run in `settings.run_dir`; returns the final evaluation row (see `train_seeds`)."""
    return train_seeds([settings], progress, dataset, on_start)[0]


def train_seeds(
    group: list[TrainSettings],
    progress: Callable[[int, int, dict], None] | None = None,
    dataset: Dataset | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train (or resume) several seeds of one run in one process, `vmap`-ed over the stacked agent states.

    Each seed keeps its own run directory, checkpoints, metrics and evaluation, with exactly the batches and keys of
    training it alone, so its results match a single-seed run to floating-point tolerance. Returns each seed's final
    evaluation row, in the order of `group`.

    Every setting, the agent config and the task name are checked before any data is loaded. A run directory with
    checkpoints is resumed from its newest readable one; the metric rows after that step are dropped and written
    again, so a run killed at any point and resumed logs the same rows and ends with the same parameters. Each row is
    written before the checkpoint of its step, so every checkpoint has all the rows up to it. A seed whose loss or
    parameters become non-finite stops (its last good checkpoint kept) while the others go on; `TrainingDiverged` is
    raised at the end. `on_start(step)` is called with the step training starts from, `progress(step, steps, row)`
    after each logging step with the row averaged over seeds.

    Each run directory is locked for the call (`vgf.training.lock`): a second launch on one is refused, naming the
    first. A file that cannot be written (a full disk) stops training with `WriteFailed` naming it; the checkpoints
    and rows before it are intact, and the same call resumes from them once there is space.
    """
    check_seed_group(group)
    with hold_run_directories([settings.run_dir for settings in group]):
        return train_held_seeds(group, progress, dataset, on_start)


def train_held_seeds(
    group: list[TrainSettings],
    progress: Callable[[int, int, dict], None] | None,
    dataset: Dataset | None,
    on_start: Callable[[int], None] | None,
) -> list[dict]:
    """`train_seeds` once its run directories are held."""
    settings = group[0]
    config = make_config(settings.agent, settings.preset, settings.overrides, task=settings.task)
    next_actions = needs_next_actions(settings.agent, config)
    if next_actions and settings.online_steps:
        raise ValueError(
            f"{settings.agent} with this config trains on the dataset's next actions (ReBRAC's critic penalty, "
            f"alpha_critic={getattr(config, 'alpha_critic', None)!r}), which online transitions do not have: "
            "set alpha_critic=0 to train online"
        )
    spec = task_spec(settings.task) if settings.task is not None else None
    if spec is None and dataset is None:
        raise ValueError("a run without a task trains on the dataset it is given: pass a dataset, or a task to load one")
    if spec is not None and spec.evaluation_refusal is not None:
        warnings.warn(f"{spec.evaluation_refusal}. Training without evaluation", UserWarning, stacklevel=2)
    evaluates = spec is not None and spec.evaluation_refusal is None
    runs = [SeedRun(member) for member in group]
    all_runs = list(runs)  # `runs` loses the seeds that diverge; every seed's logger is closed at the end
    resuming = False
    for run in runs:
        checkpoints = list_checkpoints(run.checkpoint_dir)
        if checkpoints:
            check_resumable(run.run_dir, run.settings, config, checkpoints[-1][0])
            resuming = True
    validation = None
    if dataset is None:
        dataset, validation = load_task_datasets(*spec.data_source(settings.data_dir), strict=settings.strict)
    if spec is not None:
        check_dataset_matches(dataset, spec)
    scale = 1.0
    if settings.normalize_rewards:
        from vgf.training.online import reward_scale

        scale = reward_scale(dataset)
        dataset = dataclasses.replace(dataset, rewards=(dataset.rewards * scale).astype(np.float32))
        if validation is not None:
            validation = dataclasses.replace(validation, rewards=(validation.rewards * scale).astype(np.float32))

    agents = new_agents(settings, config, dataset.obs_dim, dataset.action_dim, tuple(run.settings.seed for run in runs))
    for run in runs:
        remove_temporaries(run.run_dir)
        remove_temporaries(run.checkpoint_dir)
    start, paths = 0, [None] * len(runs)
    if resuming:
        start, agents, paths = restore_seeds(runs, agents)
    for index, run in enumerate(runs):
        write_run_info(run.run_dir, run.settings, config, dataset)  # before the first checkpoint: it has its config
        if paths[index] is None:
            paths[index] = save_checkpoint(run.checkpoint_dir, start, seed_slice(agents, index), settings.keep_checkpoints)
        run.kept = (start, paths[index])
        run.logger = open_run_logger(run.run_dir, run.settings.loggers, run.settings.group, start)
        run.logger.truncate_after(start)
    if on_start is not None:
        on_start(start)

    data = {name: jnp.asarray(array) for name, array in dataset.arrays().items()}
    if next_actions:
        data["next_actions"] = jnp.asarray(dataset.next_actions())
    held_out = {run.settings.seed: validation_batches(validation, config.batch_size, run.settings.seed, next_actions)
                for run in runs} if validation is not None and validation.size else {}
    budgets = settings.eval_budgets if get_agent(settings.agent).USES_BUDGETS else (0,)
    diverged: list[str] = []
    step = start
    logged = (step, agents, list(runs))  # the newest state whose metric rows are written: what an interrupt saves
    workers = env_workers(settings.eval_workers, spec.max_episode_steps) if evaluates else 0
    pool = EnvPool(functools.partial(make_env, settings.task), workers=workers)
    try:
        while step < settings.steps and runs:
            boundary = settings.next_boundary(step)
            began = time.perf_counter()
            candidates, infos = train_chunks(agents, data, [run.settings.seed for run in runs], step, boundary, config)
            infos = {name: np.asarray(values) for name, values in infos.items()}
            survivors = []
            for index, run in enumerate(runs):
                try:
                    check_finite({name: float(v[index]) for name, v in infos.items()}, seed_slice(candidates, index),
                                 step, boundary, run.kept)
                    survivors.append(index)
                except TrainingDiverged as error:
                    diverged.append(f"{run.run_dir}: {error}" if len(group) > 1 else str(error))
            if len(survivors) < len(runs):
                runs = [runs[index] for index in survivors]
                if not runs:
                    break
                candidates = jax.tree_util.tree_map(lambda x: x[np.asarray(survivors)], candidates)
                infos = {name: values[survivors] for name, values in infos.items()}
            agents, elapsed = candidates, time.perf_counter() - began
            step = boundary
            rows = []
            for index, run in enumerate(runs):
                row: dict[str, Any] = {"step": step, "phase": "offline", "updates_per_s": (step - logged[0]) / elapsed,
                                       "seeds_together": len(runs)}
                row.update({f"train/{name}": float(values[index]) for name, values in infos.items()})
                if step % settings.eval_every == 0 or step == settings.steps:
                    if run.settings.seed in held_out:
                        held = validation_metrics(seed_slice(agents, index), held_out[run.settings.seed])
                        row.update({f"val/{name}": float(value) for name, value in held.items()})
                    if evaluates:
                        results = evaluate_agent(seed_slice(agents, index), settings.task, budgets,
                                                 settings.eval_episodes, run.settings.seed, pool)
                        run.last_eval = eval_row(results)
                        row.update(run.last_eval)
                run.logger.log(row)
                rows.append(row)
            logged = (step, agents, list(runs))
            if step % settings.checkpoint_interval == 0 or step == settings.steps:
                for index, run in enumerate(runs):
                    run.kept = (step, save_checkpoint(run.checkpoint_dir, step, seed_slice(agents, index), settings.keep_checkpoints))
            if progress is not None:
                progress(step, settings.total_steps, mean_row(rows))
        if settings.online_steps and runs and not diverged:
            from vgf.training.online import train_online

            agent = train_online(settings, config, runs[0], seed_slice(agents, 0), step, data, scale, pool, budgets, progress)
            agents = stack_seeds([agent])
    except TrainingInterrupted:  # the online phase saved its own checkpoint, with its replay buffer
        raise
    except KeyboardInterrupt:
        logged_step, logged_agents, logged_runs = logged
        for index, run in enumerate(logged_runs):
            save_checkpoint(run.checkpoint_dir, logged_step, seed_slice(logged_agents, index), settings.keep_checkpoints)
        raise TrainingInterrupted([run.run_dir for run in logged_runs], logged_step) from None
    finally:
        pool.close()
        for run in all_runs:
            run.logger.close()
    for run in runs:
        if not run.last_eval:
            run.last_eval = next((eval_row_from(row) for row in reversed(run.logger.rows) if eval_row_from(row)), {})
        plot_learning(run.run_dir, run.logger.rows, run.settings)
    if diverged:
        raise TrainingDiverged("; ".join(diverged))
    return [run.last_eval for run in sorted(runs, key=lambda run: group.index(run.settings))]


def train_chunks(agents, data, seeds: list[int], step: int, boundary: int, config):
    """The updates `step`..`boundary` of every seed; one seed runs without `vmap`, several with it."""
    if len(seeds) == 1:
        agent, info = train_chunk(seed_slice(agents, 0), data, chunk_key(seeds[0], step), boundary - step, config.batch_size)
        return stack_seeds([agent]), {name: value[None] for name, value in info.items()}
    keys = jnp.stack([chunk_key(seed, step) for seed in seeds])
    return train_chunk_seeds(agents, data, keys, boundary - step, config.batch_size)


def mean_row(rows: list[dict]) -> dict:
    """The seeds' rows averaged key by key (the keys all of them have)."""
    keys = [key for key in rows[0] if all(key in row for row in rows)]
    return {key: rows[0][key] if key in ("step", "phase") else float(np.mean([row[key] for row in rows])) for key in keys}


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
        marker_step=settings.steps if settings.online_steps else None,
    )
