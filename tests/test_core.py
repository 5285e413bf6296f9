"""Tests for the numerical core `vgf.core`: transport, kernel, selection, losses and flow-matching BC.

Transport is checked on critics whose action-gradient is known in closed form, so every expected
direction and value here is computed independently of the code under test.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vgf.agents import get_agent, make_config
from vgf.core import (
    PARTICLE_OPTIMIZERS,
    aggregate_ensemble,
    critic_loss,
    median_bandwidth,
    pairwise_sq_distances,
    sample_flow,
    select_particles,
    svgd_direction,
    transport,
)
from vgf.training import train_chunk

B, N, A = 3, 8, 2
# One optimum per state, all well inside the action box and away from the particles' start.
CENTRES = jnp.array([[0.6, -0.5], [-0.55, 0.4], [0.3, 0.65]], dtype=jnp.float32)


def quadratic_q(particles, centres=CENTRES):
    """Q(s, a) = -|a - c_s|^2: concave, maximised at c_s, with gradient -2 (a - c_s)."""
    return -jnp.sum((particles - centres[:, None, :]) ** 2, axis=-1)


@partial(jax.jit, static_argnames=("kind", "num_steps", "bandwidth_gradient"))
def run(particles, param, num_steps, budgets=None, lr=0.05, alpha=0.1, kind="quadratic", bandwidth_gradient=True):
    """`transport` under a critic with a closed-form score: 'quadratic' (param = optima c_s, score -2 (a - c_s))
    or 'linear' (param = weights w_s, score w_s). Jitted, so each shape and step count compiles once."""
    if kind == "quadratic":
        score_fn = lambda x: -2.0 * (x - param[:, None, :])  # noqa: E731
    else:
        score_fn = lambda x: jnp.broadcast_to(param[:, None, :], x.shape)  # noqa: E731
    return transport(score_fn, particles, num_steps, optax.adam(lr), alpha, budgets, bandwidth_gradient=bandwidth_gradient)


def start_particles(seed=0, batch=B, num=N, scale=0.15):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (batch, num, A))


# ----------------------------------------------------------------------------- transport


def test_transport_moves_particles_uphill_towards_the_optimum():
    x0 = start_particles()
    x = run(x0, CENTRES, num_steps=20)
    q0, q = quadratic_q(x0), quadratic_q(x)
    # Mean value rises for every state, and every state's particles end nearer its own optimum.
    assert np.all(np.asarray(q.mean(-1)) > np.asarray(q0.mean(-1)) + 0.1)
    dist0 = jnp.linalg.norm(x0 - CENTRES[:, None], axis=-1).mean(-1)
    dist = jnp.linalg.norm(x - CENTRES[:, None], axis=-1).mean(-1)
    assert np.all(np.asarray(dist) < 0.6 * np.asarray(dist0)), (dist0, dist)


def test_transport_on_a_linear_critic_moves_along_the_gradient_sign():
    # Q(s, a) = w_s . a: the score is w_s everywhere. With the bandwidth held fixed (textbook SVGD) the repulsion
    # sums to zero over the particles, so the mean displacement must follow sign(w_s) coordinate by coordinate.
    # (The reference's bandwidth gradient adds a net pull on the median pair's particle, so it need not.)
    weights = jnp.array([[1.0, -2.0], [-0.5, 0.3], [3.0, 1.0]])
    x0 = start_particles(seed=1, scale=0.05)
    x = run(x0, weights, num_steps=3, kind="linear", bandwidth_gradient=False)
    mean_move = np.asarray((x - x0).mean(axis=1))
    np.testing.assert_array_equal(np.sign(mean_move), np.sign(np.asarray(weights)))
    assert np.all(np.abs(mean_move) > 0.02)


def test_adam_moves_each_coordinate_by_the_step_size_and_sgd_by_the_slope():
    # One step from particles well inside the box. Adam's first update is lr * sign(direction), so steepening the
    # critic 100-fold moves nothing further; plain gradient ascent moves lr times the SVGD direction itself.
    x0 = start_particles(seed=6)
    for slope in (1.0, 100.0):
        score_fn = lambda x, slope=slope: -2.0 * slope * (x - CENTRES[:, None])  # noqa: E731
        direction = svgd_direction(x0, score_fn(x0), 0.1, True)
        adam = transport(score_fn, x0, 1, PARTICLE_OPTIMIZERS["adam"](0.05), 0.1)
        np.testing.assert_allclose(np.asarray(adam - x0), 0.05 * np.sign(np.asarray(direction)), rtol=1e-4)
        sgd = transport(score_fn, x0, 1, PARTICLE_OPTIMIZERS["sgd"](1e-4), 0.1)
        np.testing.assert_allclose(np.asarray(sgd - x0), 1e-4 * np.asarray(direction), rtol=1e-4, atol=1e-7)


def test_zero_budget_returns_reference_samples_exactly():
    x0 = start_particles(seed=2)
    out = transport(lambda x: -2.0 * (x - CENTRES[:, None]), x0, 0, optax.adam(0.05), 0.1)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x0))
    # Inside a call with num_steps > 0, states whose budget is 0 are untouched bit-for-bit.
    budgets = jnp.array([0, 4, 0])
    out = np.asarray(run(x0, CENTRES, num_steps=4, budgets=budgets))
    np.testing.assert_array_equal(out[0], np.asarray(x0)[0])
    np.testing.assert_array_equal(out[2], np.asarray(x0)[2])
    assert not np.allclose(out[1], np.asarray(x0)[1])


def test_per_state_budgets_equal_separate_runs():
    x0 = start_particles(seed=3)
    budgets = [0, 1, 3]
    batched = np.asarray(run(x0, CENTRES, num_steps=3, budgets=jnp.array(budgets)))
    for i, budget in enumerate(budgets):
        alone = run(x0[i : i + 1], CENTRES[i : i + 1], num_steps=budget)
        np.testing.assert_allclose(batched[i], np.asarray(alone)[0], rtol=1e-5, atol=1e-6)
    # A different budget really gives a different answer (the comparison above is not vacuous).
    assert not np.allclose(batched[2], np.asarray(run(x0[2:3], CENTRES[2:3], num_steps=1))[0])


def test_displacement_grows_with_budget():
    x0 = start_particles(seed=4)
    displacement = {
        budget: float(jnp.linalg.norm(run(x0, CENTRES, num_steps=budget) - x0, axis=-1).mean())
        for budget in (0, 1, 2, 4)
    }
    assert displacement[0] == 0.0
    assert 0.0 < displacement[1] < displacement[2] < displacement[4], displacement


def test_transport_clips_particles_to_the_action_box():
    x0 = jnp.clip(0.9 + 0.05 * jax.random.normal(jax.random.PRNGKey(5), (B, N, A)), -1.0, 1.0) * jnp.array([1.0, -1.0])
    outward = jnp.array([10.0, -10.0])  # pushes coordinate 0 up and coordinate 1 down, out of the box
    x = np.asarray(run(x0, jnp.broadcast_to(outward, (B, A)), num_steps=20, lr=0.1, kind="linear"))
    assert np.all(x <= 1.0) and np.all(x >= -1.0)
    assert np.isclose(x[..., 0].max(), 1.0) and np.isclose(x[..., 1].min(), -1.0)


def test_full_budgets_equal_no_budgets():
    x0 = start_particles(seed=6)
    capped = run(x0, CENTRES, num_steps=3, budgets=jnp.full((B,), 3, dtype=jnp.int32))
    np.testing.assert_allclose(np.asarray(capped), np.asarray(run(x0, CENTRES, num_steps=3)), rtol=1e-6, atol=1e-7)
    # Budgets above num_steps are capped by num_steps.
    over = run(x0, CENTRES, num_steps=3, budgets=jnp.array([5, 3, 100]))
    np.testing.assert_allclose(np.asarray(over), np.asarray(capped), rtol=1e-6, atol=1e-7)


def test_budgets_stop_the_loop_at_the_largest_budget_in_the_batch():
    """A batch whose budgets are all below `num_steps` evaluates the score only for the steps it uses, and matches a
    plain run of that many steps exactly (what grouping states by budget relies on)."""
    x0 = start_particles(seed=7)
    calls = []

    def counted_score(x):
        jax.debug.callback(lambda: calls.append(1))
        return -2.0 * (x - CENTRES[:, None, :])

    moved = jax.jit(lambda x: transport(counted_score, x, 8, optax.adam(0.05), 0.1, jnp.array([2, 1, 2])))(x0)
    jax.block_until_ready(moved)
    assert len(calls) == 2
    np.testing.assert_array_equal(np.asarray(moved)[[0, 2]], np.asarray(run(x0, CENTRES, num_steps=2))[[0, 2]])


# ----------------------------------------------------------------------------- kernel / SVGD


svgd = jax.jit(svgd_direction, static_argnames=("bandwidth_gradient",))


def reference_svgd(particles: np.ndarray, scores: np.ndarray, alpha: float) -> np.ndarray:
    """Loop-based textbook phi_i = (1/N) sum_j [k(x_j, x_i) score_j / alpha + grad_{x_j} k(x_j, x_i)], per state,
    with the bandwidth held fixed and the reference's kernel exp(-d^2 / (1e-6 + 2 sigma^2))."""
    particles = particles.astype(np.float64)
    scores = scores.astype(np.float64)
    out = np.zeros_like(particles)
    for b in range(particles.shape[0]):
        x = particles[b]
        num = x.shape[0]
        sq = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(num)] for i in range(num)])
        sigma2 = max(np.median(sq) / (2.0 * np.log(num + 1.0)), 1e-12)
        width = 1e-6 + 2.0 * sigma2
        for i in range(num):
            total = np.zeros(x.shape[1])
            for j in range(num):
                k = np.exp(-np.sum((x[j] - x[i]) ** 2) / width)
                grad_xj_k = -2.0 * k * (x[j] - x[i]) / width  # d/dx_j exp(-|x_j - x_i|^2 / width)
                total += k * scores[b, j] / alpha + grad_xj_k
            out[b, i] = total / num
    return out


@pytest.mark.parametrize("num", [2, 5, 8])
def test_svgd_direction_matches_loop_reference(num):
    rng = np.random.default_rng(num)
    particles = rng.uniform(-1, 1, size=(3, num, 3)).astype(np.float32)
    scores = rng.normal(size=(3, num, 3)).astype(np.float32)
    for alpha in (0.1, 1.0):
        got = np.asarray(svgd(jnp.asarray(particles), jnp.asarray(scores), alpha, bandwidth_gradient=False))
        np.testing.assert_allclose(got, reference_svgd(particles, scores, alpha), rtol=1e-4, atol=1e-5)


def test_median_bandwidth_formula():
    x = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]], dtype=np.float32)
    sq = np.asarray(pairwise_sq_distances(jnp.asarray(x)))
    np.testing.assert_allclose(sq[0], [[0, 1, 4], [1, 0, 5], [4, 5, 0]], atol=1e-6)
    # Median of {0,0,0,1,1,4,4,5,5} is 1; sigma^2 = 1 / (2 log 4).
    np.testing.assert_allclose(np.asarray(median_bandwidth(jnp.asarray(sq))), [1.0 / (2 * np.log(4.0))], rtol=1e-6)


def test_svgd_repulsion_pushes_close_particles_apart():
    # Textbook SVGD. With the reference's bandwidth gradient and only two particles, the median's gradient outweighs
    # the repulsion and pulls the pair together (tests/fidelity checks that form against the reference itself).
    particles = jnp.array([[[0.0, 0.0], [0.01, 0.0]]])
    scores = jnp.array([[[1.0, 1.0], [1.0, 1.0]]])
    phi = np.asarray(svgd(particles, scores, 1e9, bandwidth_gradient=False))  # the score term is negligible
    assert phi[0, 0, 0] < 0 < phi[0, 1, 0]  # the left one goes left, the right one goes right
    np.testing.assert_allclose(phi[0, :, 1], 0.0, atol=1e-6)  # nothing along the orthogonal axis
    before = 0.01
    after = float(jnp.linalg.norm((particles + 1e-3 * phi)[0, 1] - (particles + 1e-3 * phi)[0, 0]))
    assert after > before


# ----------------------------------------------------------------------------- selection, ensembles, losses


def test_select_particles_modes():
    values = jnp.array([[0.1, 0.9, 0.3], [2.0, -1.0, 1.5]])
    particles = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    actions, index = select_particles(values, particles, "max")
    np.testing.assert_array_equal(np.asarray(index), [1, 0])
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(particles)[[0, 1], [1, 0]])
    for mode in ("softmax", "random"):
        actions, index = select_particles(values, particles, mode, key=jax.random.PRNGKey(0))
        assert actions.shape == (2, 2) and index.shape == (2,)
        index = np.asarray(index)
        assert np.all((index >= 0) & (index < 3))
        np.testing.assert_array_equal(np.asarray(actions), np.asarray(particles)[[0, 1], index])
    # A near-zero temperature makes softmax selection the argmax.
    _, index = select_particles(values, particles, "softmax", key=jax.random.PRNGKey(1), temperature=1e-4)
    np.testing.assert_array_equal(np.asarray(index), [1, 0])
    with pytest.raises(ValueError, match="unknown particle selection"):
        select_particles(values, particles, "best")


def test_aggregate_ensemble():
    q = jnp.array([[1.0, 5.0, -2.0], [3.0, 1.0, -4.0]])
    np.testing.assert_allclose(np.asarray(aggregate_ensemble(q, "mean")), [2.0, 3.0, -3.0])
    np.testing.assert_allclose(np.asarray(aggregate_ensemble(q, "min")), [1.0, 1.0, -4.0])
    with pytest.raises(ValueError, match="unknown ensemble aggregation"):
        aggregate_ensemble(q, "max")


def test_critic_losses_against_hand_computed_values():
    # Two members, three transitions; TD errors u = y - Q = [[1, -1, -3], [2, -2, 0]].
    q = jnp.array([[1.0, 2.0, 4.0], [0.0, 3.0, 1.0]])
    y = jnp.array([2.0, 1.0, 1.0])
    # mse: sum_members u^2 = [1+4, 1+4, 9+0] -> mean 19/3.
    np.testing.assert_allclose(float(critic_loss(q, y, "mse")), 19.0 / 3.0, rtol=1e-6)
    # expectile 0.7: weight 0.7 for u >= 0, 0.3 for u < 0.
    # member 0: 0.7, 0.3, 2.7; member 1: 2.8, 1.2, 0 -> sums 3.5, 1.5, 2.7 -> mean 7.7/3.
    np.testing.assert_allclose(float(critic_loss(q, y, "expectile", 0.7)), 7.7 / 3.0, rtol=1e-6)
    # sql with eta = 1: eta * relu-square(1 + u / 2) - u.
    # u=1: 2.25-1=1.25; u=-1: 0.25+1=1.25; u=-3: 0+3=3; u=2: 4-2=2; u=-2: 0+2=2; u=0: 1.
    # sums 3.25, 3.25, 4 -> mean 10.5/3.
    np.testing.assert_allclose(float(critic_loss(q, y, "sql", 1.0)), 10.5 / 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown critic loss"):
        critic_loss(q, y, "huber")


# ----------------------------------------------------------------------------- flow-matching BC


def test_sample_flow_integrates_a_known_velocity():
    # v = 1 everywhere moves every point by exactly +1 over t in [0, 1]; then it is clipped.
    noise = jnp.array([[-1.5, 0.2], [-0.3, -0.9]])
    out = sample_flow(lambda s, x, t: jnp.ones_like(x), jnp.zeros((2, 1)), noise, num_steps=4)
    np.testing.assert_allclose(np.asarray(out), [[-0.5, 1.0], [0.7, 0.1]], atol=1e-6)


def test_flow_matching_bc_fits_a_bimodal_distribution():
    rng = np.random.default_rng(0)
    num = 4096
    centres = np.array([[-0.5, -0.5], [0.5, 0.5]], dtype=np.float32)
    modes = rng.integers(0, 2, size=num)
    actions = (centres[modes] + 0.05 * rng.standard_normal((num, 2))).astype(np.float32)
    data = {"observations": jnp.zeros((num, 1)), "actions": jnp.asarray(actions)}

    config = make_config("bc", "bandit", {"hidden_dims": (64, 64), "bc_flow_steps": 10})
    agent = jax.jit(get_agent("bc").create, static_argnums=(0, 1, 2, 3))(config, 1, 2, 0)  # as the training loop does
    for chunk in range(3):
        agent, info = train_chunk(agent, data, jax.random.PRNGKey(chunk), 1000, config.batch_size)
    jax.block_until_ready(agent)
    assert np.isfinite(float(info["bc_flow_loss"]))

    samples, _ = agent.act(jnp.zeros((2000, 1)), jax.random.PRNGKey(42))
    samples = np.asarray(samples)
    near = [np.mean(np.linalg.norm(samples - c, axis=-1) < 0.2) for c in centres]
    between = np.mean(np.linalg.norm(samples, axis=-1) < 0.2)
    assert all(0.3 <= frac <= 0.7 for frac in near), near
    assert between < 0.1, between
    assert sum(near) > 0.8, near
