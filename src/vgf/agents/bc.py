"""Flow-matching behavior cloning: the reference model alone (VGF at budget 0 with one particle, no critic).

Its velocity network uses GELU by default, like the FQL repository's networks; with `activation="relu"` (the
`bandit` preset) it is exactly VGF's reference model.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from vgf.agents.train_state import adam_train_state

from vgf.core import FlowVelocity, flow_matching_loss, sample_flow
from vgf.core.networks import ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class BCConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    actor_layer_norm: bool = False
    learning_rate: float = 3e-4
    batch_size: int = 256
    bc_flow_steps: int = 10
    # Hidden-layer activation of the velocity network: 'gelu' as in the FQL repo's networks; 'relu' is VGF's reference
    # model, what vgf used before, and what checkpoints written then were trained with.
    activation: str = "gelu"
    bf16: bool = False

    def validate(self) -> "BCConfig":
        bad = [
            f"{name}={getattr(self, name)!r}"
            for name, ok in {
                "batch_size": self.batch_size > 0,
                "learning_rate": self.learning_rate > 0,
                "bc_flow_steps": self.bc_flow_steps > 0,
                "activation": self.activation in ACTIVATIONS,
            }.items()
            if not ok
        ]
        if bad:
            hint = "" if self.activation in ACTIVATIONS else f" (activation: one of {', '.join(ACTIVATIONS)})"
            raise ValueError(f"invalid BC config: {', '.join(bad)}{hint}")
        return self


USES_BUDGETS = False  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = ("bc_flow_steps",)

PRESETS: dict[str, BCConfig] = {
    "paper": BCConfig(),
    "cpu-small": BCConfig(hidden_dims=(256, 256, 256), bc_flow_steps=5),
    # ReLU: on the bandit, BC stands for VGF's reference model in the known-answer comparison (vgf demo, tests).
    "bandit": BCConfig(hidden_dims=(128, 128), bc_flow_steps=8, learning_rate=1e-3, activation="relu"),
}

# Config fields added since checkpoints were first written, with the value the runs before them were trained with.
LEGACY_VALUES: dict[str, Any] = {"activation": "relu"}


class BCAgent(flax.struct.PyTreeNode):
    rng: jax.Array
    flow: TrainState
    config: BCConfig = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)

    @jax.jit
    def update(self, batch):
        rng, key = jax.random.split(self.rng)

        def loss_fn(params):
            return flow_matching_loss(partial(self.flow.apply_fn, params), batch["observations"], batch["actions"], key)

        loss, grads = jax.value_and_grad(loss_fn)(self.flow.params)
        return self.replace(rng=rng, flow=self.flow.apply_gradients(grads=grads)), {"bc_flow_loss": loss}

    @partial(jax.jit, static_argnames=("max_steps",))
    def act(self, observations, key, budgets=None, max_steps: int | None = None):
        """One flow sample per state; transport budgets do not apply to plain BC."""
        noise = jax.random.normal(key, (*observations.shape[:-1], self.action_dim))
        actions = sample_flow(partial(self.flow.apply_fn, self.flow.params), observations, noise, self.config.bc_flow_steps)
        return actions, {"displacement": jnp.zeros(observations.shape[:-1])}


def create(config: BCConfig, obs_dim: int, action_dim: int, seed: int = 0) -> BCAgent:
    config.validate()
    rng, key = jax.random.split(jax.random.PRNGKey(seed))
    dtype = jnp.bfloat16 if config.bf16 else None
    net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm, dtype, activation=config.activation)
    params = net.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)), jnp.zeros((1, 1)))
    flow = adam_train_state(net.apply, params, config.learning_rate)
    return BCAgent(rng=rng, flow=flow, config=config, action_dim=action_dim)
