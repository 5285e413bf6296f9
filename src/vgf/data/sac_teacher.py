"""The online SAC teacher of the locomotion datasets: trained by sbx-rl (Stable-Baselines3's API in JAX), resumable.

One teacher run per environment and seed serves every dataset of that environment: its randomly initialised actor
(`random`), its actor at the first evaluation that reaches the medium threshold (`medium`) with every transition its
replay buffer held up to then (`medium-replay`), and its actor at the end of its step budget (`expert`).

A run directory holds `state.json` (written last, atomically: what the run has reached), `model-<steps>.zip` (sbx's own
save: networks, optimisers, entropy coefficient, step count), `log/part-*.npz` (the transitions collected, in order,
with MuJoCo's qpos/qvel before each step; the replay buffer is refilled from them on resume) and the actors it
handed out as plain arrays (`actors/*.npz`). A killed run resumes from its last checkpoint; the episode that was in
progress then is cut (its last logged transition is flagged as a time-out) and the env is reset, so a resumed
teacher is not bit-identical to one that ran through, as with any resumed online RL run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vgf.data.dataset import DatasetError
from vgf.files import atomic_file, atomic_write_text

__all__ = ["GaussianActor", "TeacherConfig", "TeacherError", "SACTeacher", "TRANSITION_KEYS", "stack_transitions"]

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "qpos", "qvel")
_LOG_STD_RANGE = (-20.0, 2.0)  # sbx's SquashedGaussianActor clips log-std to this range
_STATE_VERSION = 1


class TeacherError(DatasetError):
    """The teacher could not give what was asked (the threshold not reached within the budget, a broken run dir)."""


@dataclass(frozen=True)
class GaussianActor:
    """A tanh-squashed Gaussian MLP policy (sbx's SAC actor) as NumPy arrays, evaluated in float64.

    `hidden` holds (kernel, bias) per ReLU layer; `mean` and `log_std` the two output heads. With fixed input shapes
    on one BLAS thread each row's action depends on that row alone, which makes collection reproducible.
    """

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    mean: tuple[np.ndarray, np.ndarray]
    log_std: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_sbx(cls, params) -> "GaussianActor":
        layers = params["params"]
        names = sorted(layers, key=lambda name: int(name.split("_")[-1]))  # Dense_0, Dense_1, ...
        pairs = [(np.asarray(layers[n]["kernel"], np.float64), np.asarray(layers[n]["bias"], np.float64)) for n in names]
        return cls(tuple(pairs[:-2]), pairs[-2], pairs[-1])

    def distribution(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log_std) of the pre-tanh Gaussian for a batch of observations."""
        x = np.asarray(observations, np.float64)
        for kernel, bias in self.hidden:
            x = np.maximum(x @ kernel + bias, 0.0)
        log_std = np.clip(x @ self.log_std[0] + self.log_std[1], *_LOG_STD_RANGE)
        return x @ self.mean[0] + self.mean[1], log_std

    def act(self, observations: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """tanh(mean) without `noise` (the policy's mode), else tanh(mean + std * noise): a sample."""
        mean, log_std = self.distribution(observations)
        return np.tanh(mean if noise is None else mean + np.exp(log_std) * noise).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for i, (kernel, bias) in enumerate(self.hidden):
            arrays[f"hidden{i}_kernel"], arrays[f"hidden{i}_bias"] = kernel, bias
        arrays["mean_kernel"], arrays["mean_bias"] = self.mean
        arrays["log_std_kernel"], arrays["log_std_bias"] = self.log_std
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "GaussianActor":
        depth = sum(1 for key in arrays if key.startswith("hidden") and key.endswith("_kernel"))
        hidden = tuple((arrays[f"hidden{i}_kernel"], arrays[f"hidden{i}_bias"]) for i in range(depth))
        return cls(hidden, (arrays["mean_kernel"], arrays["mean_bias"]), (arrays["log_std_kernel"], arrays["log_std_bias"]))


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher trains. SAC's own settings are sbx's defaults (256x256 ReLU, Adam 3e-4, batch 256, gamma 0.99,
    tau 0.005, automatic entropy), which are also Stable-Baselines3's and rlkit's (D4RL's teacher)."""

    family: str  # 'hopper', 'walker2d', 'halfcheetah', 'ant'
    seed: int = 0
    budget_steps: int = 1_000_000  # the expert's: D4RL's experts were SAC trained to convergence, about 1M steps here
    medium_return: float = math.nan  # the threshold; NaN: none asked (the caller sets it for 'medium')
    eval_every: int = 5000
    eval_episodes: int = 10
    checkpoint_every: int = 25_000  # also at every evaluation that reaches the threshold, and at the budget
    learning_starts: int = 10_000  # uniform random actions first: RL Baselines3 Zoo's MuJoCo setting
    # One gradient step per env step (rlkit's and SB3's ratio), taken 8 at a time: fewer jit calls, same ratio.
    train_every: int = 8

    def validate(self) -> "TeacherConfig":
        if self.budget_steps <= 0 or self.eval_every <= 0 or self.eval_episodes <= 0 or self.checkpoint_every <= 0:
            raise DatasetError(f"teacher: budget, eval_every, eval_episodes and checkpoint_every must be > 0: {self}")
        if self.eval_every % self.train_every or self.checkpoint_every % self.eval_every:
            raise DatasetError(
                f"teacher: eval_every ({self.eval_every}) must be a multiple of train_every ({self.train_every}) and "
                f"checkpoint_every ({self.checkpoint_every}) a multiple of eval_every"
            )
        return self


def _import_sbx():
    try:
        from sbx import SAC
    except ImportError as exc:
        raise DatasetError(
            "the locomotion datasets' SAC teacher needs sbx-rl: pip install -e \".[teacher]\""
        ) from exc
    return SAC


def _recorder(sink: list, on_step: Callable[[], None]):
    """An SB3 callback that logs every transition the replay buffer receives, with the MuJoCo state before it."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Recorder(BaseCallback):
        def _on_step(self) -> bool:
            info, done = self.locals["infos"][0], bool(self.locals["dones"][0])
            truncated = bool(info.get("TimeLimit.truncated", False))
            next_obs = info["terminal_observation"] if done else self.locals["new_obs"][0]
            sink.append((self.model._last_obs[0], self.locals["actions"][0], float(self.locals["rewards"][0]),
                         next_obs, done and not truncated, truncated, info["prev_qpos"], info["prev_qvel"]))
            on_step()
            return True

    return Recorder()


def stack_transitions(rows: list) -> dict[str, np.ndarray]:
    """Rows of (observation, action, reward, next observation, terminal, time-out, qpos, qvel) as arrays by key."""
    columns = list(zip(*rows)) if rows else [[] for _ in TRANSITION_KEYS]
    dtypes = (np.float32, np.float32, np.float32, np.float32, bool, bool, np.float32, np.float32)
    return {key: np.asarray(column, dtype=dtype) for key, column, dtype in zip(TRANSITION_KEYS, columns, dtypes)}


class SACTeacher:
    """A resumable SAC teacher run in `directory` (see the module docstring for its files)."""

    def __init__(self, directory, config: TeacherConfig, make_env: Callable[[], object]):
        self.directory = Path(directory).expanduser()
        self.config = config.validate()
        self.make_env = make_env  # the collection env: the evaluation's Gymnasium env with the pre-step state in info
        self.state = self._load_state()

    # ---------------------------------------------------------------- state
    def _load_state(self) -> dict:
        path = self.directory / "state.json"
        if not path.is_file():
            return {"version": _STATE_VERSION, "config": asdict(self.config), "steps": 0, "log_parts": [],
                    "evaluations": [], "medium": None, "expert": None, "resumes": 0, "cuts": [], "model": None, "seconds": 0.0}
        state = json.loads(path.read_text())
        recorded = {key: value for key, value in state["config"].items() if key != "medium_return"}
        wanted = {key: value for key, value in asdict(self.config).items() if key != "medium_return"}
        if recorded != wanted:
            changed = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
            raise TeacherError(
                f"{self.directory}: this teacher run was trained with other settings {changed} (recorded, asked); "
                "use another teacher directory or the recorded settings"
            )
        return state

    def _save_state(self) -> None:
        atomic_write_text(self.directory / "state.json", json.dumps(self.state, indent=1))

    @property
    def steps(self) -> int:
        return int(self.state["steps"])

    def best_evaluation(self) -> dict | None:
        return max(self.state["evaluations"], key=lambda row: row["return_mean"], default=None)

    # ---------------------------------------------------------------- actors handed out
    def actor(self, stage: str) -> GaussianActor:
        """The actor of a stage ('random', 'medium' or 'expert') that the run has reached."""
        path = self.directory / "actors" / f"{stage}.npz"
        if not path.is_file():
            raise TeacherError(f"{self.directory}: the teacher has no {stage} actor yet")
        with np.load(path) as arrays:
            return GaussianActor.from_arrays(dict(arrays))

    def _keep_actor(self, stage: str, actor: GaussianActor) -> None:
        with atomic_file(self.directory / "actors" / f"{stage}.npz") as handle:
            np.savez(handle, **actor.to_arrays())

    def transitions(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The first `count` transitions the run collected (all: None), in order; an episode that a resume or the end
        cut is flagged as a time-out at its last transition."""
        parts = []
        for name in self.state["log_parts"]:
            with np.load(self.directory / "log" / name) as part:
                parts.append(dict(part))
        if not parts:
            return stack_transitions([])
        arrays = {key: np.concatenate([part[key] for part in parts]) for key in TRANSITION_KEYS}
        if count is not None:
            arrays = {key: value[:count] for key, value in arrays.items()}
        size = len(arrays["rewards"])
        for cut in [index for index in self.state["cuts"] if index < size] + ([size - 1] if size else []):
            arrays["timeouts"][cut] |= not arrays["terminals"][cut]
        return arrays

    # ---------------------------------------------------------------- training
    def ensure(self, stage: str, progress: bool = True, evaluate: Callable | None = None) -> dict:
        """Train until `stage` ('random', 'medium' or 'expert') is reached; returns its record.

        `evaluate(actor, evaluation_index) -> list of episode returns` scores the deterministic policy. Raises
        `TeacherError` when the budget runs out before the medium threshold, naming the best return reached.
        """
        if stage == "random":
            if not (self.directory / "actors" / "random.npz").is_file():
                self._build_model(resume=False)
                self._save_state()
            return {"stage": "random", "steps": 0}
        if stage == "medium" and not math.isfinite(self.config.medium_return):
            raise TeacherError("teacher: no medium threshold was given")
        if self.state.get(stage) is None:
            self._train(stage, progress, evaluate)
        return self.state[stage]

    def _build_model(self, resume: bool):
        SAC = _import_sbx()
        from stable_baselines3.common.vec_env import DummyVecEnv

        env = DummyVecEnv([self.make_env])
        env.seed(self.config.seed + 7919 * self.state["resumes"])  # a fresh reset stream after each resume
        if resume:
            model = SAC.load(self.directory / self.state["model"], env=env)
            model._last_obs = None  # the env was rebuilt: start a new episode (the logged one was cut)
            model.replay_buffer = self._refilled_buffer(model)
            return model
        model = SAC("MlpPolicy", env, learning_starts=self.config.learning_starts, train_freq=self.config.train_every,
                    gradient_steps=self.config.train_every, buffer_size=self.config.budget_steps,
                    seed=self.config.seed, verbose=0)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._keep_actor("random", GaussianActor.from_sbx(model.policy.actor_state.params))
        return model

    def _refilled_buffer(self, model):
        """The replay buffer of a resumed run, rebuilt from the logged transitions (what the buffer had received)."""
        buffer = model.replay_buffer
        log = self.transitions()
        size = len(log["rewards"])
        buffer.observations[:size, 0] = log["observations"]
        buffer.next_observations[:size, 0] = log["next_observations"]
        buffer.actions[:size, 0] = log["actions"]
        buffer.rewards[:size, 0] = log["rewards"]
        buffer.dones[:size, 0] = log["terminals"] | log["timeouts"]
        buffer.timeouts[:size, 0] = log["timeouts"]
        buffer.pos, buffer.full = size % buffer.buffer_size, size >= buffer.buffer_size
        return buffer

    def _train(self, stage: str, progress: bool, evaluate: Callable) -> None:
        from tqdm.auto import tqdm

        resume = self.state.get("model") is not None
        if resume:
            self.state["resumes"] += 1
            if self.steps - 1 not in self.state["cuts"]:  # the episode in progress at the checkpoint ends there
                self.state["cuts"].append(self.steps - 1)
        model = self._build_model(resume=resume)
        config = self.config
        pending: list = []
        bar = tqdm(total=config.budget_steps, initial=self.steps, desc=f"SAC teacher {config.family}", unit="step",
                   disable=not progress, dynamic_ncols=True)
        recorder = _recorder(pending, lambda: bar.update(1))
        try:
            while self.steps < config.budget_steps:
                began = time.perf_counter()
                model.learn(config.eval_every, reset_num_timesteps=False, callback=recorder, progress_bar=False)
                self.state["steps"] = int(model.num_timesteps)
                actor = GaussianActor.from_sbx(model.policy.actor_state.params)
                returns = evaluate(actor, len(self.state["evaluations"]))
                self.state["seconds"] += time.perf_counter() - began
                row = {"steps": self.steps, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
                       "episodes": len(returns), "seconds": round(self.state["seconds"], 1)}
                self.state["evaluations"].append(row)
                bar.set_postfix(eval_return=f"{row['return_mean']:.0f}")
                reached_medium = self.state["medium"] is None and row["return_mean"] >= config.medium_return
                finished = self.steps >= config.budget_steps
                if reached_medium or finished or self.steps % config.checkpoint_every == 0:
                    self._checkpoint(model, pending)
                if reached_medium:
                    self._keep_actor("medium", actor)
                    self.state["medium"] = {**row, "threshold": config.medium_return, "log_transitions": self.steps}
                if finished:
                    self._keep_actor("expert", actor)
                    self.state["expert"] = {**row}
                if reached_medium or finished:
                    self._save_state()
                if self.state.get(stage) is not None:
                    return
        finally:
            bar.close()
        best = self.best_evaluation()
        raise TeacherError(
            f"SAC teacher {config.family} (seed {config.seed}): {self.steps} steps, its budget, did not reach the medium "
            f"threshold {config.medium_return:.1f}; best evaluated return {best['return_mean']:.1f} at step {best['steps']}"
        )

    def _checkpoint(self, model, pending: list) -> None:
        """Model, the transitions since the last checkpoint, then the state that names both."""
        if pending:
            name = f"part-{len(self.state['log_parts']):05d}.npz"
            with atomic_file(self.directory / "log" / name) as handle:
                np.savez(handle, **stack_transitions(pending))
            self.state["log_parts"].append(name)
            pending.clear()
        name = f"model-{self.steps:08d}.zip"
        with atomic_file(self.directory / name) as handle:
            model.save(handle)
        self.state["model"] = name
        self._save_state()
        for old in self.directory.glob("model-*.zip"):  # only after the state names the new one
            if old.name != name:
                old.unlink()
