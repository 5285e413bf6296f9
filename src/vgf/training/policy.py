"""An agent's `act` as an evaluation policy whose every action depends only on its own episode.

Each row's randomness comes from its own key, `fold_in(fold_in(PRNGKey(seed), episode), step)`, and every compiled
call has one fixed shape of `ROWS_PER_CALL` rows (padded when fewer are left). XLA's results for a row change in the
last bits with the batch shape but not with a row's position or neighbours in a batch of fixed shape, so a row's
action is the same whichever rows it is evaluated with: the evaluator may split, reorder and shrink its batches
(episodes leaving as they end, halves overlapped with env stepping, any number of env workers) and still play
exactly the actions of the serial loop.

Rows are grouped by budget before they are cut into calls, so each call's transport runs only its own budget's
steps (`vgf.core.transport` stops at the largest budget in the call).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

# Rows per compiled call: small enough that padding a budget's last call wastes little, large enough that the
# fixed cost of a call (~0.15 ms on a 2-core CPU) stays a small part of it.
ROWS_PER_CALL = 4


def row_key(base: jax.Array, episode, step) -> jax.Array:
    """The key of one episode's step: a function of (seed, episode, step) only."""
    return jax.random.fold_in(jax.random.fold_in(base, episode), step)


@functools.partial(jax.jit, static_argnames=("max_steps",))
def act_rows(agent, base, observations, budgets, episodes, steps, max_steps: int):
    """`agent.act` on each row alone (batch of one, its own key), vmapped over the rows."""

    def one(observation, budget, episode, step):
        actions, aux = agent.act(observation[None], row_key(base, episode, step), budget[None], max_steps=max_steps)
        return actions[0], {name: value[0] for name, value in aux.items()}

    return jax.vmap(one)(observations, budgets, episodes, steps)


def make_policy(agent, seed: int, budgets: Sequence[int] = (0,)):
    """Wrap `agent.act` as a `vgf.evaluation.PolicyFn` for evaluations at `budgets` (any subset of them per call).

    Numpy in, numpy out. Budgets share the episode's keys (common random numbers across budgets).
    """
    base = jax.random.PRNGKey(seed)
    max_steps = int(max(budgets))
    allowed = {int(b) for b in budgets}

    def policy(observations: np.ndarray, row_budgets: np.ndarray, episodes: np.ndarray, steps: np.ndarray):
        unknown = set(np.unique(row_budgets).tolist()) - allowed
        if unknown:
            raise ValueError(f"budgets {sorted(unknown)} were not among the policy's budgets {sorted(allowed)}")
        observations = np.asarray(observations, dtype=np.float32)
        row_budgets = np.asarray(row_budgets, dtype=np.int32)
        episodes, steps = np.asarray(episodes, dtype=np.int32), np.asarray(steps, dtype=np.int32)
        calls = []
        for budget in np.unique(row_budgets):
            rows = np.flatnonzero(row_budgets == budget)
            for start in range(0, rows.size, ROWS_PER_CALL):
                chunk = rows[start : start + ROWS_PER_CALL]
                padded = np.resize(chunk, ROWS_PER_CALL)  # repeats rows of the chunk; their results are dropped
                out = act_rows(agent, base, observations[padded], row_budgets[padded], episodes[padded], steps[padded],
                               max_steps=max_steps)
                calls.append((chunk, out))  # dispatched asynchronously: the calls queue while this loop goes on
        actions = None
        aux: dict[str, np.ndarray] = {}
        for chunk, (chunk_actions, chunk_aux) in calls:
            chunk_actions = np.asarray(chunk_actions)
            if actions is None:
                actions = np.empty((len(observations), chunk_actions.shape[-1]), dtype=chunk_actions.dtype)
            actions[chunk] = chunk_actions[: chunk.size]
            for name, value in chunk_aux.items():
                value = np.asarray(value)
                aux.setdefault(name, np.empty(len(observations), dtype=value.dtype))[chunk] = value[: chunk.size]
        return actions, aux

    policy.rows_per_call = ROWS_PER_CALL
    return policy
