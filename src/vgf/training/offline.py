"""The offline training loop: chunks of jitted updates under `lax.scan`, periodic evaluation over
transport budgets, atomic checkpoints, resumable runs, and a divergence guard."""

from __future__ import annotations

import dataclasses
import functools
import json
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
from vgf.agents import get_agent, make_config, needs_next_actions
from vgf.data import Dataset, DatasetError, load_task_datasets
from vgf.envs import TaskSpec, make_env, task_spec
from vgf.evaluation import EnvPool, env_workers
from vgf.provenance import machine_description
from vgf.training.checkpoint import (
    atomic_write_text,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from vgf.training.lock import hold_run_directories
from vgf.training.online import train_online
from vgf.training.run import (
    SeedRun,
    TrainingDiverged,
    TrainingInterrupted,
    TrainSettings,
    check_finite,
    chunk_key,
    eval_row,
    evaluate_agent,
    settings_from_run,
)
from vgf.training.tracking import check_loggers, open_run_logger


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


def devices_line() -> str:
    """'JAX 0.10.2 on gpu: [CudaDevice(id=0)]': what this process computes on (`vgf train` and `vgf eval` print it)."""
    return f"JAX {jax.__version__} on {jax.default_backend()}: {jax.devices()}"


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


def write_run_info(run_dir: Path, settings: TrainSettings, config, dataset: Dataset, data_sha256: str) -> None:
    info = {
        "settings": dataclasses.asdict(settings),
        "agent_config": dataclasses.asdict(config),
        "obs_dim": dataset.obs_dim,
        "action_dim": dataset.action_dim,
        "dataset": {"source": dataset.source, "transitions": dataset.size, "sha256": data_sha256},
        "git_revision": git_revision(),
        "vgf_version": vgf.__version__,
        "jax_version": jax.__version__,
        "jax_devices": [f"{device} ({device.device_kind})" for device in jax.devices()],
        "python": platform.python_version(),
        "machine": machine_description(),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(info, indent=2))


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


def check_same_data(run_dir: Path, data_sha256: str, source: str) -> None:
    """Refuse to resume a run on other transitions than it trained on so far (data remade on another machine differs
    in its bytes). Runs recorded before the digest was kept are resumed as they are."""
    recorded = json.loads((Path(run_dir) / "config.json").read_text()).get("dataset", {}).get("sha256")
    if recorded is not None and recorded != data_sha256:
        raise DatasetError(
            f"{run_dir} trained on data with content sha256 {recorded}, but {source} now holds {data_sha256}: the "
            f"file was remade or replaced, and its transitions differ. Continue it on the data it trained on, or start "
            f"a new run directory"
        )


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
    group = [settings.with_defaults() for settings in group]
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
    data_sha256 = dataset.content_sha256()  # before any reward scaling: it names the data, not the run's view of it
    if resuming:
        for run in runs:
            check_same_data(run.run_dir, data_sha256, dataset.source)
    scale = 1.0
    if settings.normalize_rewards:
        scale = dataset.return_range_scale()
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
        write_run_info(run.run_dir, run.settings, config, dataset, data_sha256)  # before the first checkpoint: it has its config
        if paths[index] is None:
            paths[index] = save_checkpoint(run.checkpoint_dir, start, seed_slice(agents, index), settings.keep_checkpoints, settings.keep_every)
        run.kept = (start, paths[index])
        run.logger = open_run_logger(run.run_dir, run.settings.loggers, run.settings.group, start)
        run.logger.truncate_after(start)
    if on_start is not None:
        on_start(start)

    data = {name: jnp.asarray(array) for name, array in dataset.arrays().items()}
    if next_actions:
        data["next_actions"] = jnp.asarray(dataset.next_actions())
    held_out = {run.settings.seed: validation_batches(validation, config.batch_size, run.settings.seed, next_actions)
                for run in runs} if validation is not None else {}
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
                    run.kept = (step, save_checkpoint(run.checkpoint_dir, step, seed_slice(agents, index), settings.keep_checkpoints, settings.keep_every))
            if progress is not None:
                progress(step, settings.total_steps, mean_row(rows))
        if settings.online_steps and runs and not diverged:
            agent = train_online(settings, config, runs[0], seed_slice(agents, 0), step, data, scale, pool, budgets, progress)
            agents = stack_seeds([agent])
    except TrainingInterrupted:  # the online phase saved its own checkpoint, with its replay buffer
        raise
    except KeyboardInterrupt:
        logged_step, logged_agents, logged_runs = logged
        for index, run in enumerate(logged_runs):
            save_checkpoint(run.checkpoint_dir, logged_step, seed_slice(logged_agents, index), settings.keep_checkpoints, settings.keep_every)
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
