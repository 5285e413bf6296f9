"""Flow-matching behavior cloning: the straight-path regression loss and Euler sampling."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# velocity(observations [..., D], x_t [..., A], t [..., 1]) -> [..., A]
VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def flow_matching_loss(velocity: VelocityFn, observations, actions, key) -> jax.Array:
    """MSE between v(s, x_t, t) and a - x_0 on x_t = (1 - t) x_0 + t a, x_0 ~ N(0, I), t ~ U(0, 1)."""
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, actions.shape)
    times = jax.random.uniform(time_key, (*actions.shape[:-1], 1))
    noisy_actions = (1.0 - times) * noise + times * actions
    return jnp.mean((velocity(observations, noisy_actions, times) - (actions - noise)) ** 2)


def sample_flow(velocity: VelocityFn, observations, noise, num_steps: int, low=-1.0, high=1.0) -> jax.Array:
    """Integrate dx/dt = v(s, x, t) from x_0 = noise to t = 1 with `num_steps` Euler steps, then clip."""

    def euler_step(i, x):
        times = jnp.full((*x.shape[:-1], 1), i / num_steps, dtype=x.dtype)
        return x + velocity(observations, x, times) / num_steps

    return jnp.clip(jax.lax.fori_loop(0, num_steps, euler_step, noise), low, high)
