"""The high-level Python API: `vgf.fit` trains into a run directory, `vgf.load_policy` gives back a NumPy policy.

    import vgf
    from vgf.data import make_bandit_dataset

    run_dir = vgf.fit(make_bandit_dataset(), agent="vgf", task="bandit", preset="bandit", steps=2000, run_dir="runs/b")
    policy = vgf.load_policy(run_dir, seed=0)
    action = policy.act(observation)                     # [obs_dim] -> [action_dim]; [B, obs_dim] -> [B, action_dim]
    action = policy.act(observation, budget=8)           # 8 transport steps (VGF, AVGF)

Both are thin layers over `vgf.training`: `fit` is `train` (the same loop, run directory, checkpoints, resume and
loggers as `vgf train`) and `load_policy` reads what `load_run` reads.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vgf.agents import get_agent
from vgf.data import Dataset
from vgf.training import TrainSettings, load_run, settings_from_run, train
from vgf.training.tracking import parse_loggers


def fit(
    dataset: Dataset | None = None,
    agent: str = "vgf",
    *,
    run_dir: str | Path,
    task: str | None = None,
    preset: str = "cpu-small",
    steps: int = 10_000,
    seed: int = 0,
    overrides: dict | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 10,
    eval_budgets: tuple[int, ...] = (0, 1, 2, 4),
    log_every: int = 500,
    data_dir: str = "data",
    loggers: tuple[str, ...] | str = ("csv",),
    progress=None,
) -> Path:
    """Train `agent` on `dataset` into `run_dir` (or resume the run there) and return `run_dir`.

    `task` names the environment the agent is evaluated in (`vgf train --task`; its data is loaded from `data_dir` when
    no dataset is given). Without a task the run trains on `dataset` alone, with no evaluation: a user's own data
    (`Dataset.from_arrays`) with no environment. `eval_every` defaults to `steps` (one evaluation, at the end).
    `loggers` as `--logger` (e.g. "tensorboard,wandb"); `progress(step, steps, row)` is called after each logged row.
    """
    settings = TrainSettings(
        agent=agent,
        task=task,
        run_dir=str(run_dir),
        preset=preset,
        steps=steps,
        eval_every=eval_every or max(steps, 1),
        log_every=min(log_every, max(steps, 1)),
        seed=seed,
        data_dir=data_dir,
        eval_budgets=tuple(eval_budgets),
        eval_episodes=eval_episodes,
        overrides=dict(overrides or {}),
        loggers=parse_loggers(loggers),
    )
    train(settings, progress=progress, dataset=dataset)
    return Path(run_dir)


class Policy:
    """A trained agent that maps NumPy observations to NumPy actions.

    `act(observation)` takes one observation [observation_dim] (returns [action_dim]) or a batch [B, observation_dim]
    (returns [B, action_dim]). Randomness (which reference particles are drawn) is explicit: the policy's `seed` starts
    a key sequence, one key per call, so a policy loaded again with the same seed and called with the same
    observations returns the same actions; `act(..., seed=s)` instead uses the key of `s` for that call alone (the
    same seed and observation always give the same action) and leaves the sequence where it was.
    """

    def __init__(self, agent_name: str, agent, step: int, observation_dim: int, action_dim: int, seed: int):
        self.agent_name, self.agent, self.step, self.seed = agent_name, agent, step, seed
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.uses_budgets = bool(get_agent(agent_name).USES_BUDGETS)
        # The budget `vgf train` evaluates by default; agents without transport act at 0.
        self.default_budget = int(getattr(agent.config, "eval_vgf_steps", 0)) if self.uses_budgets else 0
        self._calls = 0

    def __repr__(self) -> str:
        return (f"Policy({self.agent_name}, step {self.step}, observation_dim={self.observation_dim}, "
                f"action_dim={self.action_dim}, default_budget={self.default_budget}, seed={self.seed})")

    def act(self, observation, budget: int | None = None, seed: int | None = None) -> np.ndarray:
        """Actions for `observation` ([observation_dim] or [B, observation_dim]) after `budget` transport steps.

        `budget` defaults to the agent's `eval_vgf_steps`; 0 (no transport) is accepted by every agent, a positive
        budget only by agents that transport (VGF, AVGF): the others (bc, iql, rebrac, fql, rejection) raise.
        """
        observations = np.asarray(observation, dtype=np.float32)
        if observations.ndim not in (1, 2) or observations.shape[-1] != self.observation_dim:
            raise ValueError(
                f"observation must have shape [{self.observation_dim}] or [B, {self.observation_dim}], "
                f"got {list(observations.shape)}"
            )
        budget = self.default_budget if budget is None else int(budget)
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        if budget and not self.uses_budgets:
            raise ValueError(
                f"agent {self.agent_name!r} has no transport budget (its actions do not depend on one): "
                f"call act without budget (or with budget=0), got budget={budget}"
            )
        if seed is None:
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self._calls)
            self._calls += 1
        else:
            key = jax.random.PRNGKey(seed)
        batch = observations.reshape(-1, self.observation_dim)
        budgets = jnp.full((len(batch),), budget, dtype=jnp.int32)
        actions, _ = self.agent.act(jnp.asarray(batch), key, budgets, max_steps=budget)
        actions = np.asarray(actions)
        return actions[0] if observations.ndim == 1 else actions


def load_policy(run_dir: str | Path, seed: int = 0) -> Policy:
    """The policy of the run in `run_dir` at its newest checkpoint; `seed` starts its key sequence (see `Policy`)."""
    settings, agent, step = load_run(Path(run_dir))
    _, _, info = settings_from_run(Path(run_dir))
    return Policy(settings.agent, agent, step, info["obs_dim"], info["action_dim"], seed=seed)
