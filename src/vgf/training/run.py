"""What the offline and online training loops share: a run's settings (new, read back from its directory, or one
per seed of a training call), the state of one seed of a call, evaluation rows, the sampling keys of update chunks
and the divergence guard."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgf.agents import config_from_dict
from vgf.data import d4rl_normalized_score
from vgf.envs import make_env, task_spec
from vgf.evaluation import EnvPool, PolicyFn, evaluate
from vgf.training.logger import MetricsLogger
from vgf.training.policy import make_policy
from vgf.training.tracking import TrackerError, parse_loggers


class TrainingDiverged(RuntimeError):
    """A loss or parameter became non-finite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of the last logged step was written in every run directory."""

    def __init__(self, run_dirs: list[Path], step: int):
        resume = " and ".join(f"vgf train --resume {run_dir}" for run_dir in run_dirs)
        again = "" if len(run_dirs) == 1 else " (or run the same --seeds command again)"
        super().__init__(f"interrupted; checkpoint saved at step {step}. Resume with: {resume}{again}")
        self.run_dirs, self.step = run_dirs, step


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupted_by(*signals: signal.Signals) -> Iterator[None]:
    """Within: each of `signals` raises KeyboardInterrupt as Ctrl-C does, so training checkpoints its last logged step
    before it stops. SIGTERM is what `kill`, a scheduler or a machine shutting down sends. The previous handlers are
    back after. Signal handlers run in the main thread only: elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    keep_every: int | None = None  # checkpoints at multiples of it are kept besides the newest keep_checkpoints
    strict: bool = False  # refuse dataset actions outside the action box instead of clipping them
    overrides: dict = dataclasses.field(default_factory=dict)
    # Offline-to-online (vgf.training.online): env steps after the offline `steps`, counted on from them.
    online_steps: int = 0
    replay: str = "rlpd"  # 'dataset' (one buffer of dataset + online data) | 'rlpd' (half and half) | 'online'
    online_envs: int = 1  # environments stepped together; each env step is one transition
    updates_per_env_step: int = 1
    explore_vgf_steps: int = 0  # transport budget when acting online (0: best of N reference particles by Q)
    # Scale rewards (dataset and online) so dataset episode returns span 1000. None: as the agent's reference does on
    # the task (`vgf.agents.scales_rewards`: VGF and IQL on D4RL locomotion); a run records what it resolved to.
    normalize_rewards: bool | None = None
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
        if self.keep_every is not None and self.keep_every <= 0:
            problems.append(f"keep_every must be > 0, got {self.keep_every}")
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

    def with_defaults(self) -> "TrainSettings":
        """These settings with the task-dependent defaults (None) resolved."""
        if self.normalize_rewards is not None:
            return self
        from vgf.agents import scales_rewards

        return dataclasses.replace(self, normalize_rewards=scales_rewards(self.agent, self.task))

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


def resumed_settings(run_dir: Path, *, steps: int | None = None, online_steps: int | None = None,
                     loggers: tuple[str, ...] | None = None) -> TrainSettings:
    """The settings to resume the run in `run_dir` with: its own, with more `steps` or `online_steps`, or other
    `loggers`, where given."""
    settings = settings_from_run(run_dir)[0]
    changes = {"steps": steps, "online_steps": online_steps, "loggers": loggers}
    return dataclasses.replace(settings, **{name: value for name, value in changes.items() if value is not None})


def seed_group(settings: TrainSettings, seeds: Sequence[int] | None, run_dir: str | None) -> list[TrainSettings]:
    """The settings of each seed of one training call.

    One seed (`seeds` None: `settings.seed`) trains in `run_dir`, by default `runs/<agent>-<task>-s<seed>`. Several
    seeds, trained together, each train in `<run_dir>/s<seed>` (by default the same `runs/...-s<seed>` names) and
    share a W&B group named after their parent directory. Task names such as `d4rl:hopper-medium-v2` or
    `minari:D4RL/door/human-v2` become one directory name.
    """
    name = f"{settings.agent}-{re.sub(r'[^A-Za-z0-9._-]+', '_', settings.task)}"
    if seeds is None:
        return [dataclasses.replace(settings, run_dir=run_dir or f"runs/{name}-s{settings.seed}")]
    group = Path(run_dir).name if run_dir else name
    return [
        dataclasses.replace(settings, seed=seed, group=group,
                            run_dir=str(Path(run_dir) / f"s{seed}") if run_dir else f"runs/{name}-s{seed}")
        for seed in seeds
    ]


def chunk_key(seed: int, step: int) -> jax.Array:
    """The sampling key for the chunk that starts at `step`: a pure function of (seed, step), so resumes are exact."""
    return jax.random.fold_in(jax.random.PRNGKey(seed + 1_000_003), step)


def settings_suffix(settings: dict[str, Any]) -> str:
    """`-name=value` for each changed test-time setting as applied: what tells its files from the default's."""
    return "".join(f"-{name}={value}" for name, value in settings.items())


def eval_record_name(step: int, seed: int, settings: dict[str, Any]) -> str:
    """The file name of a `vgf eval` record: the checkpoint step, the evaluation seed where it is not 0, then the
    changed test-time settings, so that an evaluation with another seed or setting never overwrites one."""
    seed_part = f"-seed{seed}" if seed else ""
    return f"budgets_step{step}{seed_part}{settings_suffix(settings)}.json"


def eval_record(step: int, episodes: int, seed: int, seconds: float, settings: dict[str, Any], results) -> dict:
    """The `vgf eval` record of `evaluate_agent`'s results (saved as JSON under `eval_record_name`)."""
    return {"step": step, "episodes": episodes, "seed": seed, "seconds": seconds, "test_time_settings": settings,
            "results": {str(budget): stats for budget, stats in results.items()}}


def evaluate_agent(agent, task: str, budgets, episodes: int, seed: int = 0, pool: EnvPool | None = None, progress=False,
                   per_episode: bool = False):
    """Success rate, return and displacement per transport budget, all budgets in one batched pass.

    D4RL tasks also get `normalized_score`: D4RL's normalised score of the mean return. An agent with a discount gets
    the discounted return and, where it reports the critic's value of its actions, that value at the first step
    (`q_start`): their difference is the critic's value error at the initial states. `per_episode`: each budget's
    stats also hold every episode's values (`vgf.evaluation.evaluate`).
    """
    return evaluate_policy(make_policy(agent, seed, budgets), task, budgets, episodes, seed, pool, progress,
                           discount=getattr(agent.config, "discount", None), per_episode=per_episode)


def evaluate_policy(policy, task: str, budgets, episodes: int, seed: int = 0, pool: EnvPool | None = None,
                    progress=False, discount: float | None = None, per_episode: bool = False):
    """`evaluate_agent` for any `vgf.evaluation.PolicyFn` (e.g. `deterministic_policy` around another library's
    actor): the same envs, reset seeds and statistics, D4RL's normalised score included."""
    results = evaluate(functools.partial(make_env, task), policy, list(budgets), episodes, seed=seed, envs=pool,
                       progress=progress, discount=discount, per_episode=per_episode)
    reference = task_spec(task).d4rl_reference
    if reference is not None:
        for stats in results.values():
            stats["normalized_score"] = d4rl_normalized_score(reference, stats["return"])
    return results


def deterministic_policy(act) -> PolicyFn:
    """A `vgf.evaluation.PolicyFn` of a function from observations [R, obs_dim] to actions [R, action_dim], which
    plays the same at every budget (a policy of another library, say)."""

    def policy(observations, budgets, episodes, steps):
        return np.asarray(act(observations), dtype=np.float32), {}

    return policy


def eval_row(results: dict[int, dict[str, float]]) -> dict[str, float]:
    row = {}
    for budget, stats in results.items():
        for name in ("success", "return", "normalized_score", "displacement", "length"):
            if name in stats:
                row[f"eval/budget_{budget}/{name}"] = stats[name]
    return row


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
