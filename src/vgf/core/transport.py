"""The VGF transport: particles from the reference model moved along the critic's action-gradient.

One function serves the TD target, acting and test-time scaling. A per-state budget lets states with
different budgets share one batch: a state stops moving once its step count reaches its budget.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from vgf.core.kernel import svgd_direction

# score(particles [B, N, A]) -> d Q / d a at every particle, [B, N, A]
ScoreFn = Callable[[jax.Array], jax.Array]

# The optimiser that applies the transport's direction to the particles, by its config name. 'adam' (the reference):
# its first step moves every coordinate by the step size, whatever the slope (Adam's first update is the sign of the
# gradient), so the budget is a distance in action units. 'sgd': each step is the step size times the direction, so
# particles move less where the critic is flat.
PARTICLE_OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {"adam": optax.adam, "sgd": optax.sgd}


def transport(
    score_fn: ScoreFn,
    particles: jax.Array,
    num_steps: int,
    optimizer: optax.GradientTransformation,
    alpha: float,
    budgets: jax.Array | None = None,
    low: float = -1.0,
    high: float = 1.0,
    bandwidth_gradient: bool = True,
) -> jax.Array:
    """Run `num_steps` SVGD steps x <- clip(x + optimizer(phi(x))) with fresh optimizer state.

    `budgets` ([B] ints, optional) caps the number of steps for each state; steps beyond a state's budget
    leave its particles where they are, and the loop stops after the largest budget in the batch (at most
    `num_steps`), so a batch of states with small budgets pays only for its own steps. With `num_steps == 0` the
    particles are returned unchanged.
    `bandwidth_gradient` selects the reference's repulsion (True) or textbook SVGD's (False): see `svgd_direction`.
    """
    if num_steps == 0:
        return particles
    opt_state = optimizer.init(particles)

    def step(step_index, x, state):
        phi = svgd_direction(x, score_fn(x), alpha, bandwidth_gradient)
        updates, state = optimizer.update(-phi, state, x)
        moved = jnp.clip(x + updates, low, high)
        if budgets is not None:
            moved = jnp.where((step_index < budgets)[:, None, None], moved, x)
        return moved, state

    if budgets is None:
        (particles, _), _ = jax.lax.scan(
            lambda carry, i: (step(i, *carry), None), (particles, opt_state), jnp.arange(num_steps)
        )
        return particles
    # A loop whose trip count is the batch's largest budget: the static `num_steps` only bounds it.
    last = jnp.minimum(jnp.max(budgets), num_steps)
    _, particles, _ = jax.lax.while_loop(
        lambda carry: carry[0] < last,
        lambda carry: (carry[0] + 1, *step(carry[0], carry[1], carry[2])),
        (jnp.zeros((), jnp.int32), particles, opt_state),
    )
    return particles


def select_particles(values, particles, mode: str, key=None, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Pick one particle per state by value: 'max', 'softmax' (with temperature) or 'random'. Returns (actions, index)."""
    if mode == "max":
        index = jnp.argmax(values, axis=-1)
    elif mode == "softmax":
        index = jax.random.categorical(key, (values - values.max(-1, keepdims=True)) / temperature, axis=-1)
    elif mode == "random":
        index = jax.random.randint(key, values.shape[:-1], 0, values.shape[-1])
    else:
        raise ValueError(f"unknown particle selection {mode!r}; expected 'max', 'softmax' or 'random'")
    return jnp.take_along_axis(particles, index[..., None, None], axis=-2)[..., 0, :], index


def aggregate_ensemble(q_values, how: str) -> jax.Array:
    """Combine critic-ensemble outputs [E, ...] into one value: 'mean' or 'min'."""
    if how == "mean":
        return q_values.mean(axis=0)
    if how == "min":
        return q_values.min(axis=0)
    raise ValueError(f"unknown ensemble aggregation {how!r}; expected 'mean' or 'min'")
