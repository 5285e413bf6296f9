"""Flow Q-Learning (FQL; Park, Li, Levine 2025): a one-step policy distilled from a flow BC model, steered by Q.

The flow BC model (flow matching, as VGF's reference model) is never trained against the critic. A one-step
policy mu(s, z) maps noise z to an action in one network call; it minimises
alpha * ||mu(s, z) - flow(s, z)||^2 - Q(s, mu(s, z)), so it stays near the flow model's action for the same
noise while climbing Q. The critic bootstraps from the one-step policy, which is also what acts.
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
from vgf.core import MLP, CriticEnsemble, FlowVelocity, aggregate_ensemble, critic_loss, flow_matching_loss, sample_flow
from vgf.core.networks import ACTIVATIONS

USES_BUDGETS = False  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FQLConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # FQL repo agents/fql.py default
    critic_layer_norm: bool = True  # FQL repo default
    actor_layer_norm: bool = False  # FQL repo default
    learning_rate: float = 3e-4  # FQL repo default
    batch_size: int = 256  # FQL repo default
    discount: float = 0.99  # FQL repo default (0.995 for the long-horizon mazes)
    tau: float = 0.005  # FQL repo default
    q_agg: str = "mean"  # ensemble aggregation in the TD target: 'mean' | 'min'; FQL repo default
    # Distillation coefficient. FQL repo default 10; 300 on cube-single/cube-double/scene and 1000 on puzzle
    # (FQL README commands, as in the paper).
    alpha: float = 300.0
    normalize_q_loss: bool = False  # divide the Q term by mean |Q|; FQL repo default (off in the paper)
    bc_flow_steps: int = 10  # Euler steps of the flow BC model; FQL repo default
    # Hidden-layer activation of every network (critic, flow BC model, one-step policy): 'gelu' as in the FQL repo's
    # utils/networks.py; 'relu' is what vgf used before, and what checkpoints written then were trained with.
    activation: str = "gelu"
    bf16: bool = False  # matrix products in bfloat16 (parameters and optimiser state stay float32)

    def validate(self) -> "FQLConfig":
        checks = {
            "batch_size": self.batch_size > 0,
            "learning_rate": self.learning_rate > 0,
            "discount": 0.0 <= self.discount <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "q_agg": self.q_agg in ("mean", "min"),
            "alpha": self.alpha >= 0,
            "bc_flow_steps": self.bc_flow_steps > 0,
            "activation": self.activation in ACTIVATIONS,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            hint = "" if self.activation in ACTIVATIONS else f" (activation: one of {', '.join(ACTIVATIONS)})"
            raise ValueError(f"invalid FQL config: {', '.join(bad)}{hint}")
        return self


PRESETS: dict[str, FQLConfig] = {
    # OGBench cube-single/cube-double/scene: alpha 300 (FQL README). On a task of TASK_VALUES, that task's values.
    "paper": FQLConfig(),
    # alpha 1000 whatever the task (FQL README's puzzle-3x3/puzzle-4x4 value); `paper` picks it on the puzzles itself.
    "paper-puzzle": FQLConfig(alpha=1000.0),
    "cpu-small": FQLConfig(hidden_dims=(256, 256, 256), bc_flow_steps=5),
    # The contextual bandit: one-step episodes (discount 0); rewards in [0, 1], so the Q term is normalised.
    "bandit": FQLConfig(
        hidden_dims=(128, 128), discount=0.0, learning_rate=1e-3, bc_flow_steps=8, alpha=1.0, normalize_q_loss=True
    ),
}

# Presets that take the values of TASK_VALUES on those tasks (`vgf.agents.make_config(..., task=...)`).
TASK_PRESETS: tuple[str, ...] = ("paper", "cpu-small")
# Per-dataset values, by OGBench dataset name (every task of that dataset), all from the FQL README's command for
# that environment ("FQL on state-based OGBench"; the paper's settings).
TASK_VALUES: dict[str, dict[str, Any]] = {
    "cube-single-play": {"alpha": 300.0},  # FQL README: --agent.alpha=300
    "cube-double-play": {"alpha": 300.0},  # FQL README: --agent.alpha=300
    "scene-play": {"alpha": 300.0},  # FQL README: --agent.alpha=300
    "puzzle-3x3-play": {"alpha": 1000.0},  # FQL README: --agent.alpha=1000
    "puzzle-4x4-play": {"alpha": 1000.0},  # FQL README: --agent.alpha=1000
    "antmaze-large-navigate": {"alpha": 10.0, "q_agg": "min"},  # FQL README: --agent.q_agg=min --agent.alpha=10
    # FQL README: --agent.discount=0.995 --agent.q_agg=min --agent.alpha=10
    "antmaze-giant-navigate": {"alpha": 10.0, "q_agg": "min", "discount": 0.995},
    # FQL README: --agent.discount=0.995 --agent.alpha=30
    "humanoidmaze-medium-navigate": {"alpha": 30.0, "discount": 0.995},
    # FQL README: --agent.discount=0.995 --agent.alpha=30
    "humanoidmaze-large-navigate": {"alpha": 30.0, "discount": 0.995},
    # FQL README: --agent.discount=0.995 --agent.alpha=10
    "antsoccer-arena-navigate": {"alpha": 10.0, "discount": 0.995},
}
# D4RL locomotion: neither the FQL paper nor its README gives values. The README's advice for a new environment:
# normalise the Q loss and tune alpha in {0.03, ..., 10}; untuned here, alpha stays at the repository's default, 10.
TASK_VALUES.update({f"{env}-{dataset}": {"alpha": 10.0, "normalize_q_loss": True}
                    for env in ("hopper", "walker2d", "halfcheetah", "ant")
                    for dataset in ("random", "medium", "medium-replay", "expert", "medium-expert")})

# Config fields added since checkpoints were first written, with the value the runs before them were trained with.
LEGACY_VALUES: dict[str, Any] = {"activation": "relu"}


class FQLAgent(struct.PyTreeNode):
    rng: jax.Array
    critic: TrainState
    target_critic_params: Any
    flow: TrainState
    one_step: TrainState
    config: FQLConfig = nonpytree_field()
    action_dim: int = nonpytree_field()

    def one_step_actions(self, observations, noise, params=None) -> jax.Array:
        """The one-step policy's action for each (state, noise) pair, unclipped."""
        params = self.one_step.params if params is None else params
        return self.one_step.apply_fn(params, jnp.concatenate([observations, noise], axis=-1))

    def flow_actions(self, observations, noise) -> jax.Array:
        velocity = partial(self.flow.apply_fn, self.flow.params)
        return sample_flow(velocity, observations, noise, self.config.bc_flow_steps)

    def critic_loss_fn(self, critic_params, batch, key):
        cfg = self.config
        next_obs = batch["next_observations"]
        noise = jax.random.normal(key, (next_obs.shape[0], self.action_dim))
        next_actions = jnp.clip(self.one_step_actions(next_obs, noise), -1.0, 1.0)
        next_q = aggregate_ensemble(self.critic.apply_fn(self.target_critic_params, next_obs, next_actions), cfg.q_agg)
        targets = batch["rewards"] + cfg.discount * batch["masks"] * next_q
        q = self.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
        loss = critic_loss(q, targets)
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": targets.mean()}

    def flow_loss_fn(self, flow_params, batch, key):
        velocity = partial(self.flow.apply_fn, flow_params)
        loss = flow_matching_loss(velocity, batch["observations"], batch["actions"], key)
        return loss, {"bc_flow_loss": loss}

    def one_step_loss_fn(self, one_step_params, batch, key):
        cfg = self.config
        observations = batch["observations"]
        noise = jax.random.normal(key, (observations.shape[0], self.action_dim))
        actions = self.one_step_actions(observations, noise, one_step_params)
        distill_loss = jnp.mean((actions - self.flow_actions(observations, noise)) ** 2)
        q = self.critic.apply_fn(self.critic.params, observations, jnp.clip(actions, -1.0, 1.0)).mean(axis=0)
        q_loss = -q.mean()
        if cfg.normalize_q_loss:
            q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean())
        loss = cfg.alpha * distill_loss + q_loss
        return loss, {"actor_loss": loss, "distill_loss": distill_loss, "actor_q_loss": q_loss}

    @jax.jit
    def update(self, batch) -> tuple["FQLAgent", dict[str, jax.Array]]:
        rng, critic_key, flow_key, one_step_key = jax.random.split(self.rng, 4)
        critic_grads, critic_info = jax.grad(self.critic_loss_fn, has_aux=True)(self.critic.params, batch, critic_key)
        flow_grads, flow_info = jax.grad(self.flow_loss_fn, has_aux=True)(self.flow.params, batch, flow_key)
        one_step_grads, one_step_info = jax.grad(self.one_step_loss_fn, has_aux=True)(
            self.one_step.params, batch, one_step_key
        )
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            rng=rng,
            critic=critic,
            target_critic_params=optax.incremental_update(critic.params, self.target_critic_params, self.config.tau),
            flow=self.flow.apply_gradients(grads=flow_grads),
            one_step=self.one_step.apply_gradients(grads=one_step_grads),
        )
        return agent, {**critic_info, **flow_info, **one_step_info}

    @partial(jax.jit, static_argnames=("max_steps",))
    def act(self, observations, key, budgets=None, max_steps: int | None = None):
        """The one-step policy at fresh noise, clipped to the action box (budgets and max_steps are unused).

        aux['q'] is the critic's value of the played action, aggregated over the ensemble as in the TD target."""
        noise = jax.random.normal(key, (*observations.shape[:-1], self.action_dim))
        actions = jnp.clip(self.one_step_actions(observations, noise), -1.0, 1.0)
        q = aggregate_ensemble(self.critic.apply_fn(self.critic.params, observations, actions), self.config.q_agg)
        return actions, {"displacement": jnp.zeros(observations.shape[:-1]), "q": q}


def create(config: FQLConfig, obs_dim: int, action_dim: int, seed: int = 0) -> FQLAgent:
    config.validate()
    dtype = jnp.bfloat16 if config.bf16 else None
    rng, critic_key, flow_key, one_step_key = jax.random.split(jax.random.PRNGKey(seed), 4)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    activation = config.activation
    critic_net = CriticEnsemble(config.hidden_dims, 2, config.critic_layer_norm, dtype, activation=activation)
    flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm, dtype, activation=activation)
    # input: [state, noise]
    one_step_net = MLP(config.hidden_dims, action_dim, config.actor_layer_norm, dtype, activation=activation)
    critic_params = critic_net.init(critic_key, obs, act)
    flow_params = flow_net.init(flow_key, obs, act, jnp.zeros((1, 1)))
    one_step_params = one_step_net.init(one_step_key, jnp.concatenate([obs, act], axis=-1))
    return FQLAgent(
        rng=rng,
        critic=adam_train_state(critic_net.apply, critic_params, config.learning_rate),
        target_critic_params=critic_params,
        flow=adam_train_state(flow_net.apply, flow_params, config.learning_rate),
        one_step=adam_train_state(one_step_net.apply, one_step_params, config.learning_rate),
        config=config,
        action_dim=action_dim,
    )
