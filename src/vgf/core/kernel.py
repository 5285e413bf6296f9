"""RBF kernel with the per-state median heuristic, and the SVGD direction built on it."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pairwise_sq_distances(particles) -> jax.Array:
    """||x_i - x_j||^2 for particles [..., N, A] -> [..., N, N]."""
    sq_norms = jnp.sum(particles**2, axis=-1)
    inner = jnp.einsum("...ia,...ja->...ij", particles, particles)
    return jnp.maximum(sq_norms[..., :, None] + sq_norms[..., None, :] - 2.0 * inner, 0.0)


def median_bandwidth(sq_distances, min_bandwidth: float = 1e-6) -> jax.Array:
    """sigma^2 = median(pairwise squared distances) / (2 log(N + 1)), one per state: [...]."""
    num = sq_distances.shape[-1]
    flat = sq_distances.reshape(*sq_distances.shape[:-2], num * num)
    return jnp.maximum(jnp.median(flat, axis=-1) / (2.0 * jnp.log(num + 1.0)), min_bandwidth)


def rbf_kernel(particles) -> tuple[jax.Array, jax.Array]:
    """k(x_i, x_j) = exp(-||x_i - x_j||^2 / (2 sigma^2)) with the median bandwidth: ([..., N, N], sigma^2 [...])."""
    sq_distances = pairwise_sq_distances(particles)
    bandwidth = jax.lax.stop_gradient(median_bandwidth(sq_distances))
    return jnp.exp(-sq_distances / (2.0 * bandwidth[..., None, None])), bandwidth


def svgd_direction(particles, scores, alpha: float) -> jax.Array:
    """phi_i = (1/N) sum_j [k(x_j, x_i) score_j / alpha + grad_{x_j} k(x_j, x_i)].

    The first term drives particles up the value; the second, sum_j k_ij (x_i - x_j) / sigma^2, keeps them apart.
    """
    kernel, bandwidth = rbf_kernel(particles)
    attraction = kernel @ scores / alpha
    repulsion = (jnp.sum(kernel, axis=-1, keepdims=True) * particles - kernel @ particles) / bandwidth[..., None, None]
    return (attraction + repulsion) / particles.shape[-2]
