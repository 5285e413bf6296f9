"""Networks: MLPs, the critic ensemble and the flow-matching velocity field (Flax linen)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}
# Where a hidden layer's LayerNorm sits: "pre" = Dense -> LayerNorm -> activation (the VGF reference's critic),
# "post" = Dense -> activation -> LayerNorm (the FQL repository's networks).
LAYER_NORM_ORDERS = ("pre", "post")


def default_init(scale: float = 1.0):
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with an activation and optional LayerNorm on each hidden layer; the last layer is linear.

    `layer_norm_order` places the LayerNorm before ("pre") or after ("post") the activation. `output_init_scale` < 1
    starts the output near zero (policy heads: actions start at the box centre).
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    dtype: jnp.dtype | None = None
    output_init_scale: float = 1.0
    activation: str = "relu"
    layer_norm_order: str = "post"

    @nn.compact
    def __call__(self, x):
        activation = ACTIVATIONS[self.activation]
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init(), dtype=self.dtype)(x)
            if self.layer_norm and self.layer_norm_order == "pre":
                x = nn.LayerNorm(dtype=self.dtype)(x)
            x = activation(x)
            if self.layer_norm and self.layer_norm_order == "post":
                x = nn.LayerNorm(dtype=self.dtype)(x)
        output = nn.Dense(self.output_dim, kernel_init=default_init(self.output_init_scale), dtype=self.dtype)(x)
        return output.astype(jnp.float32)


class CriticEnsemble(nn.Module):
    """`ensemble_size` independent Q(s, a) networks; returns Q-values of shape [ensemble, *batch].

    The members are separate modules called one after the other, not one `nn.vmap`-ed module: XLA's CPU backend runs
    the batched matrix products of a vmapped ensemble (and the backward pass of its LayerNorms) about 1.7x slower than
    the same products done member by member, and the action-gradient through the critic is most of an update.
    """

    hidden_dims: Sequence[int]
    ensemble_size: int = 2
    layer_norm: bool = True
    dtype: jnp.dtype | None = None
    activation: str = "relu"
    layer_norm_order: str = "post"

    @nn.compact
    def __call__(self, observations, actions):
        inputs = jnp.concatenate([observations, actions], axis=-1)
        members = [
            MLP(
                self.hidden_dims,
                1,
                self.layer_norm,
                self.dtype,
                activation=self.activation,
                layer_norm_order=self.layer_norm_order,
                name=f"member_{index}",
            )
            for index in range(self.ensemble_size)
        ]
        return jnp.stack([member(inputs)[..., 0] for member in members])


class FlowVelocity(nn.Module):
    """Velocity field v(s, x_t, t) of the flow-matching behavior-cloning policy."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    dtype: jnp.dtype | None = None
    activation: str = "relu"

    @nn.compact
    def __call__(self, observations, noisy_actions, times):
        inputs = jnp.concatenate([observations, noisy_actions, times], axis=-1)
        return MLP(self.hidden_dims, self.action_dim, self.layer_norm, self.dtype, activation=self.activation)(inputs)
