"""Networks: MLPs, the critic ensemble and the flow-matching velocity field (Flax linen)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def default_init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with ReLU, optional LayerNorm after each hidden layer; the last layer is linear."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init(), dtype=self.dtype)(x)
            x = nn.relu(x)
            if self.layer_norm:
                x = nn.LayerNorm(dtype=self.dtype)(x)
        return nn.Dense(self.output_dim, kernel_init=default_init(), dtype=self.dtype)(x).astype(jnp.float32)


class CriticEnsemble(nn.Module):
    """`ensemble_size` independent Q(s, a) networks; returns Q-values of shape [ensemble, *batch]."""

    hidden_dims: Sequence[int]
    ensemble_size: int = 2
    layer_norm: bool = True
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.ensemble_size,
        )
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return ensemble(self.hidden_dims, 1, self.layer_norm, self.dtype)(inputs)[..., 0]


class FlowVelocity(nn.Module):
    """Velocity field v(s, x_t, t) of the flow-matching behavior-cloning policy."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, observations, noisy_actions, times):
        inputs = jnp.concatenate([observations, noisy_actions, times], axis=-1)
        return MLP(self.hidden_dims, self.action_dim, self.layer_norm, self.dtype)(inputs)
