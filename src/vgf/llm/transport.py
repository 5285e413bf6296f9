"""The SVGD transport of `vgf.core.kernel` / `vgf.core.transport`, mirrored in PyTorch.

Language-model particles live in a PyTorch model's embedding space, so the step must act on torch
tensors. The formulas, the median-heuristic bandwidth and the optimizer (Adam with fresh state for every
transport, defaults as optax.adam) are the same as in the JAX core; tests/llm/test_transport.py checks
both on the same numbers.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

# score(particles [B, N, A]) -> gradient of the value at every particle, [B, N, A]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def pairwise_sq_distances(particles: torch.Tensor) -> torch.Tensor:
    """||x_i - x_j||^2 for particles [..., N, A] -> [..., N, N]."""
    sq_norms = (particles**2).sum(-1)
    inner = particles @ particles.transpose(-1, -2)
    return (sq_norms[..., :, None] + sq_norms[..., None, :] - 2.0 * inner).clamp_min(0.0)


def median_bandwidth(sq_distances: torch.Tensor, min_bandwidth: float = 1e-6) -> torch.Tensor:
    """sigma^2 = median(pairwise squared distances) / (2 log(N + 1)), one per state: [...]."""
    num = sq_distances.shape[-1]
    flat = sq_distances.reshape(*sq_distances.shape[:-2], num * num)
    # torch.median returns the lower middle value; jnp.median averages the two middle values.
    median = torch.quantile(flat, 0.5, dim=-1)
    return (median / (2.0 * math.log(num + 1.0))).clamp_min(min_bandwidth)


def rbf_kernel(particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k(x_i, x_j) = exp(-||x_i - x_j||^2 / (2 sigma^2)) with the median bandwidth: ([..., N, N], sigma^2 [...])."""
    sq_distances = pairwise_sq_distances(particles)
    bandwidth = median_bandwidth(sq_distances).detach()
    return torch.exp(-sq_distances / (2.0 * bandwidth[..., None, None])), bandwidth


def svgd_direction(particles: torch.Tensor, scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """phi_i = (1/N) sum_j [k(x_j, x_i) score_j / alpha + grad_{x_j} k(x_j, x_i)]: value pull plus repulsion."""
    kernel, bandwidth = rbf_kernel(particles)
    attraction = kernel @ scores / alpha
    repulsion = (kernel.sum(-1, keepdim=True) * particles - kernel @ particles) / bandwidth[..., None, None]
    return (attraction + repulsion) / particles.shape[-2]


class Adam:
    """Adam on a tensor that is not a parameter, with optax.adam's update rule and defaults."""

    def __init__(self, like: torch.Tensor, learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.learning_rate, self.b1, self.b2, self.eps = learning_rate, b1, b2, eps
        self.first_moment = torch.zeros_like(like)
        self.second_moment = torch.zeros_like(like)
        self.count = 0

    def update(self, gradient: torch.Tensor) -> torch.Tensor:
        self.count += 1
        self.first_moment = self.b1 * self.first_moment + (1 - self.b1) * gradient
        self.second_moment = self.b2 * self.second_moment + (1 - self.b2) * gradient**2
        first_unbiased = self.first_moment / (1 - self.b1**self.count)
        second_unbiased = self.second_moment / (1 - self.b2**self.count)
        return -self.learning_rate * first_unbiased / (second_unbiased.sqrt() + self.eps)


def transport(
    score_fn: ScoreFn,
    particles: torch.Tensor,
    num_steps: int,
    learning_rate: float,
    alpha: float,
    low: float | None = None,
    high: float | None = None,
) -> torch.Tensor:
    """Run `num_steps` SVGD steps x <- clip(x + adam(-phi(x))) with fresh Adam state; [B, N, A] -> [B, N, A].

    `low`/`high` clip like the action box of the offline agents; embedding particles leave them None.
    With `num_steps == 0` the particles are returned unchanged.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if particles.ndim != 3:
        raise ValueError(f"particles must be [batch, particles, dim], got shape {tuple(particles.shape)}")
    particles = particles.detach()
    optimizer = Adam(particles, learning_rate)
    for _ in range(num_steps):
        scores = score_fn(particles).detach()
        if scores.shape != particles.shape:
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {tuple(particles.shape)}")
        phi = svgd_direction(particles, scores, alpha)
        particles = particles + optimizer.update(-phi)
        if low is not None or high is not None:
            particles = particles.clamp(low, high)
    return particles
