"""Offline-to-online training: after the offline updates, act in the environment and keep training.

Acting. `online_envs` environments step together; every environment step makes one jitted `agent.act` call on all
of them. VGF acts with the exploration budget `explore_vgf_steps` (default 0: the method's offline-to-online setting,
best of N reference particles by Q), and the particle played is chosen as in evaluation (the config's
`eval_particle_select`, argmax by default): exploration comes from the N fresh reference samples, as prescribed.

Replay. Online transitions go into a fixed-capacity `ReplayBuffer` of device arrays. Batches are drawn inside the
jitted `lax.scan` of updates, in one of three styles: 'dataset' (dataset and online data as one buffer, uniform over
their union), 'rlpd' (half of every batch from the dataset, half from the online buffer) or 'online' (online data
only). After each environment step `online_envs * updates_per_env_step` updates run in one compiled call.

Masks. A transition bootstraps (mask 1) unless the episode truly terminated; a time-out only ends the episode
(`terminals` 1, mask 1), so the critic still bootstraps from the last observation. OGBench single-task envs
terminate on success, which matches the masks of their datasets (1 - success).

Resume. A checkpoint of an online step is the usual agent checkpoint plus a sibling `replay_<step>.msgpack` holding
the buffer, written first: the agent checkpoint is the commit point, so a run killed at any moment resumes from a
consistent (agent, buffer) pair. Acting keys and update batches are functions of (seed, step). The one part that is
not restored is the environments: episodes running at the checkpoint are dropped and the envs start fresh episodes
(reset seeds drawn from (seed, resume step)), so a resumed online run is correct but not bit-identical.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from vgf.envs import make_env
from vgf.evaluation import EnvPool
from vgf.training.checkpoint import atomic_write_bytes, list_checkpoints, save_checkpoint
from vgf.training.run import (
    REPLAY_MODES,
    SeedRun,
    TrainingInterrupted,
    TrainSettings,
    check_finite,
    chunk_key,
    eval_row,
    evaluate_agent,
)


class ReplayBuffer(flax.struct.PyTreeNode):
    """A ring buffer of transitions on the device: `arrays[key]` has a leading capacity axis.

    `size` counts the stored transitions (at most the capacity) and `position` is the next row written; both are
    device scalars, so inserting and sampling run inside jitted code.
    """

    arrays: dict[str, jax.Array]
    size: jax.Array
    position: jax.Array

    @classmethod
    def like(cls, data: dict[str, jax.Array], capacity: int) -> "ReplayBuffer":
        """An empty buffer of `capacity` rows with the keys, dtypes and row shapes of `data`."""
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        arrays = {name: jnp.zeros((capacity, *array.shape[1:]), array.dtype) for name, array in data.items()}
        return cls(arrays=arrays, size=jnp.zeros((), jnp.int32), position=jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    @jax.jit
    def insert(self, transitions: dict[str, jax.Array]) -> "ReplayBuffer":
        """Append a batch of transitions, overwriting the oldest rows once the buffer is full."""
        count = next(iter(transitions.values())).shape[0]
        rows = (self.position + jnp.arange(count)) % self.capacity
        arrays = {name: array.at[rows].set(transitions[name].astype(array.dtype)) for name, array in self.arrays.items()}
        return self.replace(
            arrays=arrays,
            size=jnp.minimum(self.size + count, self.capacity),
            position=(self.position + count) % self.capacity,
        )

    def sample(self, key, batch_size: int) -> dict[str, jax.Array]:
        index = jax.random.randint(key, (batch_size,), 0, self.size)
        return {name: array[index] for name, array in self.arrays.items()}


def sample_batch(replay: str, data: dict[str, jax.Array], buffer: ReplayBuffer, key, batch_size: int) -> dict:
    """A training batch in the replay style `replay` (see the module docstring); traceable."""
    if replay == "online":
        return buffer.sample(key, batch_size)
    dataset_size = next(iter(data.values())).shape[0]
    if replay == "rlpd":
        # The first rows from the dataset, the last `batch_size // 2` from the online buffer.
        online_rows = batch_size // 2
        dataset_key, online_key = jax.random.split(key)
        index = jax.random.randint(dataset_key, (batch_size - online_rows,), 0, dataset_size)
        online = buffer.sample(online_key, online_rows)
        return {name: jnp.concatenate([array[index], online[name]]) for name, array in data.items()}
    if replay == "dataset":
        # Uniform over the union: rows below `dataset_size` are dataset rows, the others online rows.
        index = jax.random.randint(key, (batch_size,), 0, dataset_size + buffer.size)
        from_dataset = index < dataset_size
        dataset_index = jnp.minimum(index, dataset_size - 1)
        online_index = jnp.maximum(index - dataset_size, 0)
        batch = {}
        for name, array in data.items():
            chosen = from_dataset.reshape(-1, *([1] * (array.ndim - 1)))
            batch[name] = jnp.where(chosen, array[dataset_index], buffer.arrays[name][online_index])
        return batch
    raise ValueError(f"unknown replay style {replay!r}; valid styles: {', '.join(REPLAY_MODES)}")


@functools.partial(jax.jit, static_argnames=("num_updates", "batch_size", "replay"))
def train_chunk_online(agent, data, buffer: ReplayBuffer, key, num_updates: int, batch_size: int, replay: str):
    """`num_updates` updates in one compiled call, batches drawn in the replay style `replay` inside the scan."""

    def body(carry, step_key):
        return carry.update(sample_batch(replay, data, buffer, step_key, batch_size))

    agent, infos = jax.lax.scan(body, agent, jax.random.split(key, num_updates))
    return agent, jax.tree_util.tree_map(jnp.mean, infos)


def replay_path(checkpoint_dir: Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"replay_{step:09d}.msgpack"


def save_online_checkpoint(checkpoint_dir: Path, step: int, agent, buffer: ReplayBuffer, keep: int,
                           keep_every: int | None = None) -> Path:
    """The buffer first, then the agent (the commit point); replay files of pruned checkpoints are deleted."""
    atomic_write_bytes(replay_path(checkpoint_dir, step), serialization.to_bytes(buffer))
    path = save_checkpoint(checkpoint_dir, step, agent, keep, keep_every)
    kept = {step for step, _ in list_checkpoints(checkpoint_dir)}
    for old in Path(checkpoint_dir).glob("replay_*.msgpack"):
        if int(old.stem.removeprefix("replay_")) not in kept:
            old.unlink(missing_ok=True)
    return path


def load_replay(checkpoint_dir: Path, step: int, template: ReplayBuffer) -> ReplayBuffer:
    path = replay_path(checkpoint_dir, step)
    if not path.exists():
        raise ValueError(
            f"{path} not found: the online checkpoint of step {step} has no replay buffer beside it; "
            f"delete {Path(checkpoint_dir) / f'step_{step:09d}.msgpack'} to resume from the one before"
        )
    try:
        restored = serialization.from_bytes(template, path.read_bytes())
    except Exception as error:  # msgpack and structure errors carry no file name
        raise ValueError(f"replay buffer {path} cannot be restored: {error}") from error
    if restored.capacity == template.capacity:
        return restored
    # A run resumed with more online steps: move the stored transitions, oldest first, into the larger buffer.
    size = int(restored.size)
    oldest_first = (int(restored.position) - size + np.arange(size)) % restored.capacity
    return template.insert({name: array[oldest_first] for name, array in restored.arrays.items()})


class OnlineEnvs:
    """`count` environments from an `EnvPool` (the cached, cheaply cloned envs evaluation uses), stepped together.

    Each finished episode is reset at once, so every row always holds a live episode and `act` sees a fixed batch.
    Episode statistics (raw return, final `info['success']`, length) are collected until `take_episodes`.
    """

    def __init__(self, pool: EnvPool, count: int, reset_seeds: np.random.Generator):
        self.envs = pool.get(count)
        self.reset_seeds = reset_seeds
        self.observations = np.stack([self._reset(env) for env in self.envs]).astype(np.float32)
        self.returns = np.zeros(count)
        self.lengths = np.zeros(count, dtype=np.int64)
        self.finished: list[tuple[float, float, int]] = []

    def _reset(self, env) -> np.ndarray:
        return env.reset(seed=int(self.reset_seeds.integers(2**31)))[0]

    def step(self, actions: np.ndarray, scale: float) -> dict[str, np.ndarray]:
        """Step every env; returns the transitions (rewards times `scale`) and moves on to the next observations."""
        count = len(self.envs)
        next_observations = np.empty_like(self.observations)
        rewards, masks, terminals = np.empty(count, np.float32), np.empty(count, np.float32), np.empty(count, np.float32)
        following = self.observations.copy()
        for row, env in enumerate(self.envs):
            observation, reward, terminated, truncated, info = env.step(actions[row])
            next_observations[row] = observation
            rewards[row], masks[row], terminals[row] = reward * scale, 1.0 - terminated, terminated or truncated
            self.returns[row] += reward
            self.lengths[row] += 1
            following[row] = observation
            if terminated or truncated:
                self.finished.append((self.returns[row], float(info.get("success", 0.0)), int(self.lengths[row])))
                self.returns[row], self.lengths[row] = 0.0, 0
                following[row] = self._reset(env)
        transitions = {
            "observations": self.observations,
            "actions": actions.astype(np.float32),
            "rewards": rewards,
            "next_observations": next_observations,
            "masks": masks,
            "terminals": terminals,
        }
        self.observations = following
        return transitions

    def take_episodes(self) -> dict[str, float]:
        """Mean return, success and length of the episodes finished since the last call, and their count."""
        finished, self.finished = self.finished, []
        row = {"online/episodes": float(len(finished))}
        if finished:
            returns, successes, lengths = np.asarray(finished, dtype=np.float64).T
            row.update({"online/episode_return": float(returns.mean()), "online/success": float(successes.mean()),
                        "online/episode_length": float(lengths.mean())})
        return row


def act_key(seed: int, step: int) -> jax.Array:
    """The acting key at global step `step`: a pure function of (seed, step), like the update batches."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + 2_000_003), step)


def online_rows_due(settings: TrainSettings, before: int, after: int) -> tuple[bool, bool, bool]:
    """Whether the env step from `before` to `after` reaches a log, an evaluation and a checkpoint step."""
    total = settings.total_steps

    def reached(interval: int) -> bool:
        return after // interval > before // interval or after == total

    return reached(settings.log_every), reached(settings.eval_every), reached(settings.checkpoint_interval)


def train_online(
    settings: TrainSettings,
    config,
    run: SeedRun,
    agent,
    start: int,
    data: dict[str, jax.Array],
    scale: float,
    eval_pool: EnvPool,
    budgets: tuple[int, ...],
    progress: Callable[[int, int, dict], None] | None = None,
) -> Any:
    """The online phase of one seed, from global step `start` (>= `settings.steps`) to `settings.total_steps`.

    `agent` is the agent at `start` (the end of the offline phase, or a restored online checkpoint, whose replay
    buffer is then loaded); `scale` multiplies the environment's rewards; evaluations run at `budgets` on envs from
    `eval_pool`. Returns the final agent; rows, evaluations and checkpoints go to `run` as in the offline phase.
    """
    seed, total, envs_count = settings.seed, settings.total_steps, settings.online_envs
    buffer = ReplayBuffer.like(data, settings.online_steps)
    if start > settings.steps:
        buffer = load_replay(run.checkpoint_dir, start, buffer)
    budget = settings.explore_vgf_steps
    explore_budgets = jnp.full((envs_count,), budget, jnp.int32)
    env_pool = EnvPool(functools.partial(make_env, settings.task))
    envs = OnlineEnvs(env_pool, envs_count, np.random.default_rng([seed, start]))
    updates_per_step = envs_count * settings.updates_per_env_step
    step, infos = start, []
    logged = (step, agent, buffer)  # the newest state whose rows are written: what an interrupt saves
    began = time.perf_counter()
    try:
        while step < total:
            actions, _ = agent.act(jnp.asarray(envs.observations), act_key(seed, step), explore_budgets, max_steps=budget)
            buffer = buffer.insert(envs.step(np.asarray(actions), scale))
            agent, info = train_chunk_online(
                agent, data, buffer, chunk_key(seed, step), updates_per_step, config.batch_size, settings.replay
            )
            infos.append(info)
            before, step = step, step + envs_count
            log_due, eval_due, checkpoint_due = online_rows_due(settings, before, step)
            if not log_due:
                continue
            means = {name: float(np.mean([float(item[name]) for item in infos])) for name in infos[0]}
            check_finite(means, agent, logged[0], step, run.kept)
            elapsed = time.perf_counter() - began
            row: dict[str, Any] = {
                "step": step,
                "phase": "online",
                "updates_per_s": len(infos) * updates_per_step / elapsed,
                "env_steps_per_s": (step - logged[0]) / elapsed,
                "online/env_steps": step - settings.steps,
                "online/buffer_size": int(buffer.size),
            }
            row.update({f"train/{name}": value for name, value in means.items()})
            row.update(envs.take_episodes())
            if eval_due:
                run.last_eval = eval_row(evaluate_agent(agent, settings.task, budgets, settings.eval_episodes, seed, eval_pool))
                row.update(run.last_eval)
            run.logger.log(row)
            logged = (step, agent, buffer)
            if checkpoint_due:
                run.kept = (step, save_online_checkpoint(run.checkpoint_dir, step, agent, buffer, settings.keep_checkpoints, settings.keep_every))
            if progress is not None:
                progress(step, total, row)
            infos, began = [], time.perf_counter()
    except KeyboardInterrupt:
        logged_step, logged_agent, logged_buffer = logged
        save_online_checkpoint(run.checkpoint_dir, logged_step, logged_agent, logged_buffer, settings.keep_checkpoints,
                               settings.keep_every)
        raise TrainingInterrupted([run.run_dir], logged_step) from None
    finally:
        env_pool.close()
    return agent

