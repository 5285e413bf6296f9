"""Amortised VGF: VGF whose transport follows a learned gradient network instead of the critic's gradient.

A network g(s, a) regresses the critic's action-gradient grad_a Q(s, a) at dataset actions (MSE to the
stop-gradient target). Transport, for the TD target and for acting, then calls g once per step instead of
back-propagating through the critic ensemble. Everything else is VGF's (../shared/METHOD.md, "Amortised VGF"):
the flow BC reference, the critic and its target, particle selection and per-state budgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from vgf.agents.train_state import adam_train_state
from vgf.agents import vgf as vgf_agent
from vgf.agents.vgf import VGFAgent, VGFConfig, nonpytree_field
from vgf.core import MLP, PARTICLE_OPTIMIZERS, FlowVelocity, transport

USES_BUDGETS = True  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = (*vgf_agent.TEST_TIME_FIELDS, "particle_grad_clip")
upgrade_config = vgf_agent.upgrade_config
LEGACY_VALUES = vgf_agent.LEGACY_VALUES


@dataclasses.dataclass(frozen=True)
class AVGFConfig(VGFConfig):
    # Regress grad_a Q divided by its batch-mean norm, and track that norm (moving average) to scale g back when
    # transporting: the regression target keeps unit scale as Q grows, the transport sees the critic's scale.
    grad_normalize: bool = True
    grad_scale_rate: float = 0.01  # step size of the moving average of the gradient norm
    particle_grad_clip: float = 1.0  # norm clip of each state's particle update before its optimiser (METHOD.md: 1.0)

    def validate(self) -> "AVGFConfig":
        super().validate()
        checks = {
            "grad_scale_rate": 0.0 < self.grad_scale_rate <= 1.0,
            "particle_grad_clip": self.particle_grad_clip > 0,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid amortised-VGF config: " + ", ".join(bad))
        return self


# VGF's presets (same sources, see vgf.py) with the gradient network's defaults added: derived, so the two agents
# always compare at the same settings.
PRESETS: dict[str, AVGFConfig] = {
    name: AVGFConfig(**dataclasses.asdict(config)) for name, config in vgf_agent.PRESETS.items()
}


def clip_each_state(max_norm: float) -> optax.GradientTransformation:
    """Scale each state's particle update [N, A] to norm <= max_norm.

    Per state rather than over the whole [B, N, A] batch, so one state's transport does not depend on the other
    states it is batched with (evaluation batches mix budgets).
    """

    def clip(updates, params=None):
        norms = jnp.linalg.norm(updates, axis=(-2, -1), keepdims=True)
        return updates * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))

    return optax.stateless(clip)


class AVGFAgent(struct.PyTreeNode):
    rng: jax.Array
    critic: TrainState
    target_critic_params: Any
    flow: TrainState
    grad_net: TrainState
    grad_scale: jax.Array  # moving average of ||grad_a Q|| at dataset actions (1 when not normalising)
    config: AVGFConfig = nonpytree_field()
    action_dim: int = nonpytree_field()

    # VGF's networks, reference sampling, losses and acting, unchanged: they call `self.transport`, defined below.
    q_values = VGFAgent.q_values
    q_score = VGFAgent.q_score
    sample_reference = VGFAgent.sample_reference
    reference_from_noise = VGFAgent.reference_from_noise
    critic_loss_fn = VGFAgent.critic_loss_fn
    flow_loss_fn = VGFAgent.flow_loss_fn
    act = VGFAgent.act
    act_from_reference = VGFAgent.act_from_reference

    def predicted_score(self, observations, actions, params=None) -> jax.Array:
        """g(s, a) * grad_scale: the amortised grad_a Q; observations broadcast over particle axes."""
        observations = jnp.broadcast_to(observations, (*actions.shape[:-1], observations.shape[-1]))
        params = self.grad_net.params if params is None else params
        return self.grad_net.apply_fn(params, jnp.concatenate([observations, actions], axis=-1)) * self.grad_scale

    def transport(self, observations, particles, num_steps: int, budgets=None) -> jax.Array:
        cfg = self.config
        return transport(
            lambda x: self.predicted_score(observations[:, None, :], x),
            particles,
            num_steps,
            optax.chain(clip_each_state(cfg.particle_grad_clip),
                        PARTICLE_OPTIMIZERS[cfg.transport_optimizer](cfg.vgf_lr)),
            cfg.vgf_alpha,
            budgets,
            bandwidth_gradient=cfg.bandwidth_gradient,
        )

    def grad_loss_fn(self, grad_params, batch):
        observations, actions = batch["observations"], batch["actions"]
        target = jax.lax.stop_gradient(self.q_score(observations)(actions))
        target_norm = jnp.linalg.norm(target, axis=-1).mean()
        scale = jnp.maximum(target_norm, 1e-6) if self.config.grad_normalize else 1.0
        prediction = self.grad_net.apply_fn(grad_params, jnp.concatenate([observations, actions], axis=-1))
        loss = jnp.mean((prediction - target / scale) ** 2)
        norms = jnp.linalg.norm(prediction, axis=-1) * jnp.linalg.norm(target, axis=-1)
        cosine = jnp.sum(prediction * target, axis=-1) / (norms + 1e-8)
        return loss, {"grad_loss": loss, "grad_cosine": cosine.mean(), "critic_grad_norm": target_norm}

    @jax.jit
    def update(self, batch) -> tuple["AVGFAgent", dict[str, jax.Array]]:
        cfg = self.config
        rng, critic_key, flow_key = jax.random.split(self.rng, 3)
        critic_grads, critic_info = jax.grad(self.critic_loss_fn, has_aux=True)(self.critic.params, batch, critic_key)
        flow_grads, flow_info = jax.grad(self.flow_loss_fn, has_aux=True)(self.flow.params, batch, flow_key)
        grad_net_grads, grad_info = jax.grad(self.grad_loss_fn, has_aux=True)(self.grad_net.params, batch)
        critic = self.critic.apply_gradients(grads=critic_grads)
        grad_scale = self.grad_scale
        if cfg.grad_normalize:
            grad_scale = optax.incremental_update(grad_info["critic_grad_norm"], grad_scale, cfg.grad_scale_rate)
        agent = self.replace(
            rng=rng,
            critic=critic,
            target_critic_params=optax.incremental_update(self.critic.params, self.target_critic_params, cfg.tau),
            flow=self.flow.apply_gradients(grads=flow_grads),
            grad_net=self.grad_net.apply_gradients(grads=grad_net_grads),
            grad_scale=grad_scale,
        )
        return agent, {**critic_info, **flow_info, **grad_info}


def create(config: AVGFConfig, obs_dim: int, action_dim: int, seed: int = 0) -> AVGFAgent:
    """Initialise networks, optimisers and the target critic for the given dimensions."""
    config.validate()
    dtype = jnp.bfloat16 if config.bf16 else None
    rng, critic_key, flow_key, grad_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    critic_net = vgf_agent.critic_network(config, dtype)
    flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm, dtype)
    # The reference builds g as it builds the critic (its Value network, vector output).
    grad_net = MLP(
        config.hidden_dims, action_dim, config.critic_layer_norm, dtype, layer_norm_order=config.critic_layer_norm_order
    )  # input: [state, action]
    critic_params = critic_net.init(critic_key, obs, act)
    flow_params = flow_net.init(flow_key, obs, act, jnp.zeros((1, 1)))
    grad_net_params = grad_net.init(grad_key, jnp.concatenate([obs, act], axis=-1))
    return AVGFAgent(
        rng=rng,
        critic=adam_train_state(critic_net.apply, critic_params, config.learning_rate),
        target_critic_params=critic_params,
        flow=adam_train_state(flow_net.apply, flow_params, config.learning_rate),
        grad_net=adam_train_state(grad_net.apply, grad_net_params, config.learning_rate),
        grad_scale=jnp.ones(()),
        config=config,
        action_dim=action_dim,
    )
