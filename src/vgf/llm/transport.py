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


# Floors of the reference, as in vgf.core.kernel: on sigma^2 and in the kernel's denominator.
MIN_BANDWIDTH = 1e-12
KERNEL_EPSILON = 1e-6


def pairwise_sq_distances(particles: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """||x_i - y_j||^2 for particles [..., N, A] and others [..., M, A] (default: the particles) -> [..., N, M]."""
    others = particles if others is None else others
    sq_norms = (particles**2).sum(-1)[..., :, None] + (others**2).sum(-1)[..., None, :]
    return (sq_norms - 2.0 * particles @ others.transpose(-1, -2)).clamp_min(0.0)


def median_bandwidth(sq_distances: torch.Tensor) -> torch.Tensor:
    """sigma^2 = median(all N x M squared distances) / (2 log(N + 1)), one per state: [...].

    The median averages the two middle values, as jnp.median does, from a stable sort: among equal distances (d_ij
    and d_ji) the gradient goes to the same entry as in JAX.
    """
    num = sq_distances.shape[-2]
    ordered, _ = torch.sort(sq_distances.flatten(-2), dim=-1, stable=True)
    count = ordered.shape[-1]
    middle = ordered[..., count // 2] if count % 2 else (ordered[..., count // 2 - 1] + ordered[..., count // 2]) / 2
    return (middle / (2.0 * math.log(num + 1.0))).clamp_min(MIN_BANDWIDTH)


def rbf_kernel(
    particles: torch.Tensor, others: torch.Tensor | None = None, bandwidth_gradient: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """k(x_i, y_j) = exp(-||x_i - y_j||^2 / (eps + 2 sigma^2)) with the median bandwidth: ([..., N, M], sigma^2 [...])."""
    sq_distances = pairwise_sq_distances(particles, others)
    bandwidth = median_bandwidth(sq_distances)
    if not bandwidth_gradient:
        bandwidth = bandwidth.detach()
    return torch.exp(-sq_distances / (KERNEL_EPSILON + 2.0 * bandwidth[..., None, None])), bandwidth


def svgd_direction(particles: torch.Tensor, scores: torch.Tensor, alpha: float, bandwidth_gradient: bool = True) -> torch.Tensor:
    """phi_i = (1/N) [sum_j k(x_i, x_j) score_j / alpha - grad_{x_i} sum_j k(x_i, detach(x_j))], as vgf.core.kernel."""
    anchors = particles.detach()
    with torch.enable_grad():
        live = anchors.clone().requires_grad_(True)
        kernel, _ = rbf_kernel(live, anchors, bandwidth_gradient)
        (kernel_grad,) = torch.autograd.grad(kernel.sum(), live)
    return (kernel.detach() @ scores / alpha - kernel_grad) / particles.shape[-2]


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
    bandwidth_gradient: bool = True,
) -> torch.Tensor:
    """Run `num_steps` SVGD steps x <- clip(x + adam(-phi(x))) with fresh Adam state; [B, N, A] -> [B, N, A].

    `low`/`high` clip like the action box of the offline agents; embedding particles leave them None.
    `bandwidth_gradient` as in `vgf.core.transport` (the reference's repulsion, or textbook SVGD's with False).
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
        phi = svgd_direction(particles, scores, alpha, bandwidth_gradient)
        particles = particles + optimizer.update(-phi)
        if low is not None or high is not None:
            particles = particles.clamp(low, high)
    return particles
