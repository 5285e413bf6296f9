"""The PyTorch transport mirrors vgf.core's JAX transport on the same numbers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
import jax.numpy as jnp
import optax

from vgf.core import kernel as jax_kernel
from vgf.core.transport import transport as jax_transport
from vgf.llm import transport as torch_transport


@pytest.fixture
def particles():
    return np.random.default_rng(0).normal(size=(3, 6, 5)).astype(np.float32)


def test_pairwise_distances_and_bandwidth_match(particles):
    expected = jax_kernel.pairwise_sq_distances(jnp.asarray(particles))
    got = torch_transport.pairwise_sq_distances(torch.from_numpy(particles))
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        torch_transport.median_bandwidth(got).numpy(), np.asarray(jax_kernel.median_bandwidth(expected)), rtol=1e-5
    )


@pytest.mark.parametrize("bandwidth_gradient", [True, False])
def test_svgd_direction_matches(particles, bandwidth_gradient):
    scores = np.random.default_rng(1).normal(size=particles.shape).astype(np.float32)
    expected = jax_kernel.svgd_direction(jnp.asarray(particles), jnp.asarray(scores), 0.5, bandwidth_gradient)
    got = torch_transport.svgd_direction(torch.from_numpy(particles), torch.from_numpy(scores), 0.5, bandwidth_gradient)
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [False, True])
def test_transport_matches_jax_with_adam(particles, clip):
    target = np.linspace(-0.5, 0.5, particles.shape[-1]).astype(np.float32)
    low, high = (-1.0, 1.0) if clip else (None, None)
    expected = jax_transport(
        lambda x: -(x - jnp.asarray(target)), jnp.asarray(particles), 5, optax.adam(0.1), 0.7,
        low=-1.0 if clip else -jnp.inf, high=1.0 if clip else jnp.inf,
    )
    got = torch_transport.transport(lambda x: -(x - torch.from_numpy(target)), torch.from_numpy(particles), 5, 0.1, 0.7, low, high)
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_zero_steps_returns_particles_unchanged(particles):
    start = torch.from_numpy(particles)
    assert torch.equal(torch_transport.transport(lambda x: torch.ones_like(x), start, 0, 0.1, 1.0), start)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="num_steps"):
        torch_transport.transport(lambda x: x, torch.zeros(1, 2, 3), -1, 0.1, 1.0)
    with pytest.raises(ValueError, match=r"\[batch, particles, dim\]"):
        torch_transport.transport(lambda x: x, torch.zeros(2, 3), 1, 0.1, 1.0)
    with pytest.raises(ValueError, match="score_fn returned shape"):
        torch_transport.transport(lambda x: x[..., :1], torch.zeros(1, 2, 3), 1, 0.1, 1.0)
