"""Rejection sampling from the flow BC reference (IDQL-style): VGF with zero transport.

For each state, N actions from the flow-matching BC model; play the one the critic scores highest. The TD
target scores N reference actions at the next state the same way (mean or max over them), so the critic
evaluates the policy that acts. This is the family the VGF paper contrasts with: it can only re-rank what
the reference model proposes, while VGF moves the proposals along grad_a Q.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from vgf.agents.train_state import adam_train_state
from vgf.agents.vgf import VGFAgent, nonpytree_field
from vgf.core import CriticEnsemble, FlowVelocity, aggregate_ensemble, critic_loss, select_particles

USES_BUDGETS = False  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = ("num_particles", "bc_flow_steps", "q_agg", "eval_particle_select", "softmax_temperature")


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
    # VGF's fields and `paper` defaults (../shared/METHOD.md) without the transport: VGF at budget 0.
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    critic_layer_norm: bool = True
    actor_layer_norm: bool = False
    learning_rate: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    ensemble_size: int = 2
    critic_loss: str = "mse"  # 'mse' | 'expectile' | 'sql'
    expectile: float = 0.7
    bc_flow_steps: int = 10
    num_particles: int = 10  # VGF's N, so the two differ only by the transport (IFQL in the FQL repo uses 32)
    q_agg: str = "mean"  # ensemble aggregation for selection: 'mean' | 'min'
    target_q_agg: str = "min"  # ensemble aggregation of the target critic in the TD target
    train_particle_select: str = "mean"  # 'mean' | 'max' over next-state particles in the TD target
    eval_particle_select: str = "max"  # 'max' | 'softmax' | 'random'
    softmax_temperature: float = 1.0
    bf16: bool = False  # matrix products in bfloat16 (parameters and optimiser state stay float32)

    def validate(self) -> "RejectionConfig":
        checks = {
            "batch_size": self.batch_size > 0,
            "learning_rate": self.learning_rate > 0,
            "num_particles": self.num_particles > 0,
            "bc_flow_steps": self.bc_flow_steps > 0,
            "discount": 0.0 <= self.discount <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "ensemble_size": self.ensemble_size >= 1,
            "q_agg": self.q_agg in ("mean", "min"),
            "target_q_agg": self.target_q_agg in ("mean", "min"),
            "train_particle_select": self.train_particle_select in ("mean", "max"),
            "eval_particle_select": self.eval_particle_select in ("max", "softmax", "random"),
            "softmax_temperature": self.softmax_temperature > 0,
            "critic_loss": self.critic_loss in ("mse", "expectile", "sql"),
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid rejection-sampling config: " + ", ".join(bad))
        return self


# The VGF presets with the transport removed.
PRESETS: dict[str, RejectionConfig] = {
    "paper": RejectionConfig(),
    "paper-d4rl": RejectionConfig(q_agg="min"),
    "cpu-small": RejectionConfig(hidden_dims=(256, 256, 256), num_particles=8, bc_flow_steps=5),
    "bandit": RejectionConfig(
        hidden_dims=(128, 128), discount=0.0, num_particles=16, bc_flow_steps=8, learning_rate=1e-3
    ),
}


class RejectionAgent(struct.PyTreeNode):
    rng: jax.Array
    critic: TrainState
    target_critic_params: Any
    flow: TrainState
    config: RejectionConfig = nonpytree_field()
    action_dim: int = nonpytree_field()

    # VGF's networks, reference sampling, BC loss and update step, unchanged; only the critic target and acting
    # below differ (no transport).
    q_values = VGFAgent.q_values
    sample_reference = VGFAgent.sample_reference
    reference_from_noise = VGFAgent.reference_from_noise  # what sample_reference integrates with
    flow_loss_fn = VGFAgent.flow_loss_fn
    update = VGFAgent.update

    def critic_loss_fn(self, critic_params, batch, key):
        cfg = self.config
        targets = batch["rewards"]
        if cfg.discount > 0:  # a bandit (discount 0) needs no next-state particles
            next_obs = batch["next_observations"]
            particles = self.sample_reference(next_obs, key, cfg.num_particles)
            next_q = aggregate_ensemble(
                self.q_values(next_obs[:, None, :], particles, self.target_critic_params), cfg.target_q_agg
            )
            next_value = next_q.max(-1) if cfg.train_particle_select == "max" else next_q.mean(-1)
            targets = jax.lax.stop_gradient(targets + cfg.discount * batch["masks"] * next_value)
        q = self.q_values(batch["observations"], batch["actions"], critic_params)
        loss = critic_loss(q, targets, cfg.critic_loss, cfg.expectile)
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": targets.mean()}

    @partial(jax.jit, static_argnames=("max_steps",))
    def act(self, observations, key, budgets=None, max_steps: int | None = None):
        """Best of N reference samples by Q (budgets and max_steps are unused: nothing is transported)."""
        cfg = self.config
        sample_key, select_key = jax.random.split(key)
        particles = self.sample_reference(observations, sample_key, cfg.num_particles)
        values = aggregate_ensemble(self.q_values(observations[:, None, :], particles), cfg.q_agg)
        actions, _ = select_particles(values, particles, cfg.eval_particle_select, select_key, cfg.softmax_temperature)
        return actions, {"displacement": jnp.zeros(observations.shape[:-1]), "q": values.max(-1)}


def create(config: RejectionConfig, obs_dim: int, action_dim: int, seed: int = 0) -> RejectionAgent:
    config.validate()
    dtype = jnp.bfloat16 if config.bf16 else None
    rng, critic_key, flow_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    critic_net = CriticEnsemble(config.hidden_dims, config.ensemble_size, config.critic_layer_norm, dtype)
    flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm, dtype)
    critic_params = critic_net.init(critic_key, obs, act)
    flow_params = flow_net.init(flow_key, obs, act, jnp.zeros((1, 1)))
    return RejectionAgent(
        rng=rng,
        critic=adam_train_state(critic_net.apply, critic_params, config.learning_rate),
        target_critic_params=critic_params,
        flow=adam_train_state(flow_net.apply, flow_params, config.learning_rate),
        config=config,
        action_dim=action_dim,
    )
