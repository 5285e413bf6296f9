"""Implicit Q-Learning (IQL; Kostrikov et al. 2022), the OGBench baseline as configured in the FQL paper.

An expectile value V(s) of the target critic's Q(s, a) at dataset actions gives an in-sample max without
querying unseen actions; the twin critic regresses r + gamma V(s'); the Gaussian actor (unit standard
deviation, unsquashed mean) is fit by advantage-weighted regression and plays its clipped mean.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from vgf.agents.train_state import adam_train_state
from vgf.agents.vgf import nonpytree_field
from vgf.core import MLP, CriticEnsemble, critic_loss, expectile_loss
from vgf.core.networks import ACTIVATIONS

USES_BUDGETS = False  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class IQLConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # FQL repo agents/iql.py default
    critic_layer_norm: bool = True  # on V and Q; FQL repo default
    actor_layer_norm: bool = False  # FQL repo default
    learning_rate: float = 3e-4  # FQL repo default
    batch_size: int = 256  # FQL repo default
    discount: float = 0.99  # FQL repo default (0.995 for the long-horizon mazes)
    tau: float = 0.005  # FQL repo default
    expectile: float = 0.9  # FQL repo default
    # AWR inverse temperature: weight exp(alpha * advantage). FQL repo default 10; 1 on cube-single (see TASK_VALUES).
    awr_alpha: float = 1.0
    max_awr_weight: float = 100.0  # FQL repo: exp weights clipped at 100
    actor_output_scale: float = 0.01  # initial scale of the actor's last layer; FQL repo utils/networks.py default
    # Hidden-layer activation of every network (Q, V, actor): 'gelu' as in the FQL repo's utils/networks.py; 'relu'
    # is what vgf used before, and what checkpoints written then were trained with.
    activation: str = "gelu"
    bf16: bool = False  # matrix products in bfloat16 (parameters and optimiser state stay float32)

    def validate(self) -> "IQLConfig":
        checks = {
            "batch_size": self.batch_size > 0,
            "learning_rate": self.learning_rate > 0,
            "discount": 0.0 <= self.discount <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "expectile": 0.0 < self.expectile < 1.0,
            "awr_alpha": self.awr_alpha >= 0,
            "max_awr_weight": self.max_awr_weight > 0,
            "actor_output_scale": self.actor_output_scale > 0,
            "activation": self.activation in ACTIVATIONS,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            hint = "" if self.activation in ACTIVATIONS else f" (activation: one of {', '.join(ACTIVATIONS)})"
            raise ValueError(f"invalid IQL config: {', '.join(bad)}{hint}")
        return self


PRESETS: dict[str, IQLConfig] = {
    # OGBench manipulation (cube-single-play), as the FQL paper ran IQL.
    "paper": IQLConfig(),
    "cpu-small": IQLConfig(hidden_dims=(256, 256, 256)),
    # The contextual bandit: one-step episodes (discount 0); rewards in [0, 1] need a sharper AWR weight.
    "bandit": IQLConfig(hidden_dims=(128, 128), discount=0.0, learning_rate=1e-3, awr_alpha=10.0),
}

# Presets that take the values of TASK_VALUES on those tasks (`vgf.agents.make_config(..., task=...)`).
TASK_PRESETS: tuple[str, ...] = ("paper", "cpu-small")
# Per-dataset AWR temperature, by OGBench dataset name, only where a command line from the FQL authors or a repository
# that reuses their numbers states it; the other datasets keep the preset's value until the FQL paper's table
# (arXiv:2502.02538, appendix) is checked.
TASK_VALUES: dict[str, dict[str, Any]] = {
    "cube-single-play": {"awr_alpha": 1.0},  # InFOM repository README (same group), state-based cube-single: alpha 1
    # Value Flows README (it reuses the FQL paper's baseline numbers) runs IQL on visual puzzle-3x3 and visual scene
    # with alpha 10, which is also the FQL repository's default, what its main.py trains with when no flag is given.
    "puzzle-3x3-play": {"awr_alpha": 10.0},
    "scene-play": {"awr_alpha": 10.0},
    # FQL README (IQL on humanoidmaze-medium): --agent.discount=0.995 --agent.alpha=10
    "humanoidmaze-medium-navigate": {"awr_alpha": 10.0, "discount": 0.995},
}

# D4RL locomotion (any dataset of hopper, walker2d, halfcheetah, ant), from the IQL authors' code
# (ikostrikov/implicit_q_learning configs/mujoco_config.py): expectile 0.7, temperature 3.0, 2 x 256 ReLU networks
# without LayerNorm. Still different there: its actor's learning rate follows a cosine decay (here constant), and its
# actor learns a state-independent log-std (here unit std: the mean is what is played either way).
_D4RL_LOCOMOTION = {"expectile": 0.7, "awr_alpha": 3.0, "hidden_dims": (256, 256), "critic_layer_norm": False,
                    "activation": "relu"}
TASK_VALUES.update({f"{env}-{dataset}": _D4RL_LOCOMOTION for env in ("hopper", "walker2d", "halfcheetah", "ant")
                    for dataset in ("random", "medium", "medium-replay", "expert", "medium-expert")})
# Its train_offline.py scales locomotion rewards by 1000 / (max - min episode return) (`vgf.agents.scales_rewards`).
D4RL_LOCOMOTION_REWARD_SCALING = True

# Config fields added since checkpoints were first written, with the value the runs before them were trained with.
LEGACY_VALUES: dict[str, Any] = {"activation": "relu"}


class IQLAgent(struct.PyTreeNode):
    critic: TrainState
    target_critic_params: Any
    value: TrainState
    actor: TrainState
    config: IQLConfig = nonpytree_field()
    action_dim: int = nonpytree_field()

    def q_min(self, observations, actions, params) -> jax.Array:
        return self.critic.apply_fn(params, observations, actions).min(axis=0)

    def state_value(self, observations, params=None) -> jax.Array:
        return self.value.apply_fn(self.value.params if params is None else params, observations)[..., 0]

    def value_loss_fn(self, value_params, batch):
        q = self.q_min(batch["observations"], batch["actions"], self.target_critic_params)
        v = self.state_value(batch["observations"], value_params)
        loss = expectile_loss(q - v, self.config.expectile).mean()
        return loss, {"value_loss": loss, "v_mean": v.mean()}

    def critic_loss_fn(self, critic_params, batch):
        next_v = self.state_value(batch["next_observations"])
        targets = batch["rewards"] + self.config.discount * batch["masks"] * next_v
        q = self.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
        loss = critic_loss(q, targets)
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": targets.mean()}

    def actor_loss_fn(self, actor_params, batch):
        cfg = self.config
        advantage = self.q_min(batch["observations"], batch["actions"], self.critic.params) - self.state_value(
            batch["observations"]
        )
        weights = jnp.minimum(jnp.exp(cfg.awr_alpha * advantage), cfg.max_awr_weight)
        means = self.actor.apply_fn(actor_params, batch["observations"])
        # -log N(a; mean, I) up to a constant: the reference's actor has a constant unit standard deviation.
        negative_log_likelihood = 0.5 * jnp.sum((means - batch["actions"]) ** 2, axis=-1)
        loss = jnp.mean(weights * negative_log_likelihood)
        mse = jnp.mean((means - batch["actions"]) ** 2)
        return loss, {"actor_loss": loss, "advantage": advantage.mean(), "awr_weight": weights.mean(), "actor_mse": mse}

    @jax.jit
    def update(self, batch) -> tuple["IQLAgent", dict[str, jax.Array]]:
        # All three losses read the parameters from before this step, as in the reference's joint update.
        value_grads, value_info = jax.grad(self.value_loss_fn, has_aux=True)(self.value.params, batch)
        critic_grads, critic_info = jax.grad(self.critic_loss_fn, has_aux=True)(self.critic.params, batch)
        actor_grads, actor_info = jax.grad(self.actor_loss_fn, has_aux=True)(self.actor.params, batch)
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            critic=critic,
            target_critic_params=optax.incremental_update(critic.params, self.target_critic_params, self.config.tau),
            value=self.value.apply_gradients(grads=value_grads),
            actor=self.actor.apply_gradients(grads=actor_grads),
        )
        return agent, {**value_info, **critic_info, **actor_info}

    @partial(jax.jit, static_argnames=("max_steps",))
    def act(self, observations, key, budgets=None, max_steps: int | None = None):
        """The actor's mean, clipped to the action box (deterministic; key, budgets and max_steps are unused).

        aux['q'] is the critic's value of the played action (the ensemble's min, as the value loss takes it)."""
        actions = jnp.clip(self.actor.apply_fn(self.actor.params, observations), -1.0, 1.0)
        q = self.q_min(observations, actions, self.critic.params)
        return actions, {"displacement": jnp.zeros(observations.shape[:-1]), "q": q}


def create(config: IQLConfig, obs_dim: int, action_dim: int, seed: int = 0) -> IQLAgent:
    config.validate()
    dtype = jnp.bfloat16 if config.bf16 else None
    critic_key, value_key, actor_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    activation = config.activation
    critic_net = CriticEnsemble(config.hidden_dims, 2, config.critic_layer_norm, dtype, activation=activation)
    value_net = MLP(config.hidden_dims, 1, config.critic_layer_norm, dtype, activation=activation)
    actor_net = MLP(
        config.hidden_dims,
        action_dim,
        config.actor_layer_norm,
        dtype,
        output_init_scale=config.actor_output_scale,
        activation=activation,
    )
    critic_params = critic_net.init(critic_key, obs, act)
    return IQLAgent(
        critic=adam_train_state(critic_net.apply, critic_params, config.learning_rate),
        target_critic_params=critic_params,
        value=adam_train_state(value_net.apply, value_net.init(value_key, obs), config.learning_rate),
        actor=adam_train_state(actor_net.apply, actor_net.init(actor_key, obs), config.learning_rate),
        config=config,
        action_dim=action_dim,
    )
