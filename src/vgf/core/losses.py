"""Critic losses on the TD error y - Q: squared, expectile (IQL-style) and SQL-style."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expectile_loss(td_error, expectile: float) -> jax.Array:
    """|tau - 1(u < 0)| u^2: tau > 0.5 weights under-estimation more."""
    weight = jnp.where(td_error >= 0, expectile, 1.0 - expectile)
    return weight * td_error**2


def sql_loss(td_error, expectile: float) -> jax.Array:
    """Sparse-Q-learning-style loss: eta * 1(1 + u / 2eta > 0) (1 + u / 2eta)^2 - u."""
    shifted = 1.0 + td_error / (2.0 * expectile)
    return expectile * jnp.where(shifted > 0, shifted**2, 0.0) - td_error


def critic_loss(q_values, targets, kind: str = "mse", expectile: float = 0.7) -> jax.Array:
    """Loss of an ensemble's predictions [E, B] against targets [B], summed over members, mean over the batch."""
    td_error = targets[None, :] - q_values
    if kind == "mse":
        per_member = td_error**2
    elif kind == "expectile":
        per_member = expectile_loss(td_error, expectile)
    elif kind == "sql":
        per_member = sql_loss(td_error, expectile)
    else:
        raise ValueError(f"unknown critic loss {kind!r}; expected 'mse', 'expectile' or 'sql'")
    return per_member.sum(axis=0).mean()
