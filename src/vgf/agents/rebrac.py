"""ReBRAC (Tarasov et al. 2023): TD3+BC with LayerNorm critics and separate actor and critic BC penalties.

A deterministic tanh actor maximises the (normalised) minimum of two critics minus `alpha_actor` times its
squared distance to the dataset action; the critic's TD target subtracts `alpha_critic` times the squared
distance of the noisy target-actor action to the dataset's next action. The actor's gradient and both target
networks move every `actor_freq` updates, the critic every update; on the updates between, the actor's Adam steps
with a zero gradient (its momentum keeps moving it), as the FQL repository's one optimiser over all networks does.
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
from vgf.core import MLP, CriticEnsemble, critic_loss
from vgf.core.networks import ACTIVATIONS

USES_BUDGETS = False  # whether `act` honours per-state transport budgets
# Config fields that only shape acting: `vgf eval --set` may change them on a trained agent.
TEST_TIME_FIELDS: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ReBRACConfig:
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)  # FQL repo agents/rebrac.py default
    critic_layer_norm: bool = True  # FQL repo default
    actor_layer_norm: bool = False  # FQL repo default
    learning_rate: float = 3e-4  # FQL repo default
    batch_size: int = 256  # FQL repo default
    discount: float = 0.99  # FQL repo default (0.995 for the long-horizon mazes)
    tau: float = 0.005  # FQL repo default
    # BC coefficients: FQL repo defaults are 0 and 0; actor 1, critic 0 is the FQL README's visual-cube-single command.
    # Per-environment values (the state-based cube-single among them): TASK_VALUES.
    alpha_actor: float = 1.0
    alpha_critic: float = 0.0  # > 0 needs batch['next_actions'] (the training loop adds them: needs_next_actions)
    actor_freq: int = 2  # actor and target updates every 2 critic updates; FQL repo default
    actor_noise: float = 0.2  # target policy smoothing noise std; FQL repo default
    actor_noise_clip: float = 0.5  # FQL repo default
    actor_output_scale: float = 0.01  # initial scale of the actor's last layer; FQL repo default
    # Hidden-layer activation of the critic and the actor: 'gelu' as in the FQL repo's utils/networks.py; 'relu' is
    # what vgf used before, and what checkpoints written then were trained with.
    activation: str = "gelu"
    # On the updates between actor updates, step the actor's Adam with a zero gradient (True: the FQL repo, whose one
    # Adam over all networks keeps moving the actor by its momentum) or freeze the actor and its Adam state (False:
    # vgf before, and what checkpoints written then were trained with).
    actor_adam_every_update: bool = True
    bf16: bool = False  # matrix products in bfloat16 (parameters and optimiser state stay float32)

    def validate(self) -> "ReBRACConfig":
        checks = {
            "batch_size": self.batch_size > 0,
            "learning_rate": self.learning_rate > 0,
            "discount": 0.0 <= self.discount <= 1.0,
            "tau": 0.0 < self.tau <= 1.0,
            "alpha_actor": self.alpha_actor >= 0,
            "alpha_critic": self.alpha_critic >= 0,
            "actor_freq": self.actor_freq >= 1,
            "actor_noise": self.actor_noise >= 0,
            "actor_noise_clip": self.actor_noise_clip >= 0,
            "actor_output_scale": self.actor_output_scale > 0,
            "activation": self.activation in ACTIVATIONS,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            hint = "" if self.activation in ACTIVATIONS else f" (activation: one of {', '.join(ACTIVATIONS)})"
            raise ValueError(f"invalid ReBRAC config: {', '.join(bad)}{hint}")
        return self


PRESETS: dict[str, ReBRACConfig] = {
    # The FQL repo's networks; on a task of TASK_VALUES, that task's BC coefficients.
    "paper": ReBRACConfig(),
    "cpu-small": ReBRACConfig(hidden_dims=(256, 256, 256)),
    # The contextual bandit: one-step episodes (discount 0), so the critic penalty has nothing to act on.
    "bandit": ReBRACConfig(hidden_dims=(128, 128), discount=0.0, learning_rate=1e-3, alpha_actor=0.1),
}

# Presets that take the values of TASK_VALUES on those tasks (`vgf.agents.make_config(..., task=...)`).
TASK_PRESETS: tuple[str, ...] = ("paper", "cpu-small")
# Per-dataset BC coefficients (actor, critic), by OGBench dataset name, only where a command line from the FQL
# authors states them; the other datasets keep the preset's values until the FQL paper's table (arXiv:2502.02538,
# appendix) is checked. A critic coefficient > 0 trains on the dataset's next actions (`needs_next_actions`).
TASK_VALUES: dict[str, dict[str, Any]] = {
    # InFOM repository README (same group), state-based cube-single: --agent.alpha_actor=1 --agent.alpha_critic=1
    # (its visual-cube-single command, like the FQL README's, uses critic 0).
    "cube-single-play": {"alpha_actor": 1.0, "alpha_critic": 1.0},
    # FQL README (ReBRAC on humanoidmaze-medium): --agent.discount=0.995 --agent.alpha_actor=0.01 --agent.alpha_critic=0.01
    "humanoidmaze-medium-navigate": {"alpha_actor": 0.01, "alpha_critic": 0.01, "discount": 0.995},
}

# D4RL locomotion, from the ReBRAC authors' configs (tinkoff-ai/ReBRAC configs/rebrac/<env>/<env>_<dataset>.yaml, the
# same in CORL's configs/offline/rebrac): (actor, critic) BC coefficients per dataset, and for all of them batch 1024,
# learning rate 1e-3, 3 x 256 ReLU networks, LayerNorm on the critic only, no state or reward normalisation. The
# paper's Table 11 gives hopper-medium's critic coefficient as 0.001; the configs (what its code ran) say 0.01.
_REBRAC_D4RL_COEFFICIENTS = {
    "halfcheetah-medium": (0.001, 0.01), "halfcheetah-medium-replay": (0.01, 0.001),
    "halfcheetah-medium-expert": (0.01, 0.1), "hopper-medium": (0.01, 0.01), "hopper-medium-replay": (0.05, 0.5),
    "hopper-medium-expert": (0.1, 0.01), "walker2d-medium": (0.05, 0.1), "walker2d-medium-replay": (0.05, 0.01),
    "walker2d-medium-expert": (0.01, 0.01),
}
TASK_VALUES.update({
    name: {"alpha_actor": actor, "alpha_critic": critic, "batch_size": 1024, "learning_rate": 1e-3,
           "hidden_dims": (256, 256, 256), "activation": "relu"}
    for name, (actor, critic) in _REBRAC_D4RL_COEFFICIENTS.items()
})

# Config fields added since checkpoints were first written, with the value the runs before them were trained with.
LEGACY_VALUES: dict[str, Any] = {"activation": "relu", "actor_adam_every_update": False}


def needs_next_actions(config: ReBRACConfig) -> bool:
    """Whether training batches must hold 'next_actions' (the dataset's action one step later): the critic penalty."""
    return config.alpha_critic > 0


def where_tree(condition, if_true, if_false):
    """Leaf-wise select between two pytrees of the same structure (a batched-friendly lax.cond)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


class ReBRACAgent(struct.PyTreeNode):
    rng: jax.Array
    critic: TrainState
    target_critic_params: Any
    actor: TrainState
    target_actor_params: Any
    config: ReBRACConfig = nonpytree_field()
    action_dim: int = nonpytree_field()

    def policy(self, observations, params=None) -> jax.Array:
        return jnp.tanh(self.actor.apply_fn(self.actor.params if params is None else params, observations))

    def critic_loss_fn(self, critic_params, batch, key):
        cfg = self.config
        next_actions = self.policy(batch["next_observations"], self.target_actor_params)
        noise = cfg.actor_noise * jax.random.normal(key, next_actions.shape)  # target policy smoothing
        next_actions = jnp.clip(next_actions + jnp.clip(noise, -cfg.actor_noise_clip, cfg.actor_noise_clip), -1.0, 1.0)
        next_q = self.critic.apply_fn(self.target_critic_params, batch["next_observations"], next_actions).min(axis=0)
        if cfg.alpha_critic > 0:
            if "next_actions" not in batch:
                raise ValueError(
                    "ReBRAC with alpha_critic > 0 needs batch['next_actions'] (the dataset's action at the next "
                    "step); this dataset has none, so set alpha_critic=0"
                )
            next_q = next_q - cfg.alpha_critic * jnp.sum((next_actions - batch["next_actions"]) ** 2, axis=-1)
        targets = batch["rewards"] + cfg.discount * batch["masks"] * next_q
        q = self.critic.apply_fn(critic_params, batch["observations"], batch["actions"])
        loss = critic_loss(q, targets)
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": targets.mean()}

    def actor_loss_fn(self, actor_params, batch):
        actions = self.policy(batch["observations"], actor_params)
        q = self.critic.apply_fn(self.critic.params, batch["observations"], actions).min(axis=0)
        # Dividing by the mean |Q| makes alpha_actor independent of the reward scale.
        q_loss = -jnp.mean(q) / jax.lax.stop_gradient(jnp.abs(q).mean())
        bc_loss = self.config.alpha_actor * jnp.mean(jnp.sum((actions - batch["actions"]) ** 2, axis=-1))
        loss = q_loss + bc_loss
        return loss, {"actor_loss": loss, "actor_q_loss": q_loss, "actor_bc_loss": bc_loss}

    @jax.jit
    def update(self, batch) -> tuple["ReBRACAgent", dict[str, jax.Array]]:
        cfg = self.config
        rng, critic_key = jax.random.split(self.rng)
        critic_grads, critic_info = jax.grad(self.critic_loss_fn, has_aux=True)(self.critic.params, batch, critic_key)
        actor_grads, actor_info = jax.grad(self.actor_loss_fn, has_aux=True)(self.actor.params, batch)
        critic = self.critic.apply_gradients(grads=critic_grads)
        # TD3's delayed policy update: the actor's gradient and both targets apply on every `actor_freq`-th update only.
        # Selects (not lax.cond) keep the update identical under jax.vmap over seeds.
        actor_step = (self.critic.step + 1) % cfg.actor_freq == 0
        if cfg.actor_adam_every_update:
            # The FQL repo's one Adam over all networks: a zero actor gradient on critic-only updates, and Adam steps.
            actor_grads = jax.tree_util.tree_map(lambda g: jnp.where(actor_step, g, jnp.zeros_like(g)), actor_grads)
            actor = self.actor.apply_gradients(grads=actor_grads)
        else:
            actor = where_tree(actor_step, self.actor.apply_gradients(grads=actor_grads), self.actor)
        target_critic = optax.incremental_update(critic.params, self.target_critic_params, cfg.tau)
        target_actor = optax.incremental_update(actor.params, self.target_actor_params, cfg.tau)
        agent = self.replace(
            rng=rng,
            critic=critic,
            target_critic_params=where_tree(actor_step, target_critic, self.target_critic_params),
            actor=actor,
            target_actor_params=where_tree(actor_step, target_actor, self.target_actor_params),
        )
        return agent, {**critic_info, **actor_info}

    @partial(jax.jit, static_argnames=("max_steps",))
    def act(self, observations, key, budgets=None, max_steps: int | None = None):
        """The deterministic tanh actor (key, budgets and max_steps are unused).

        aux['q'] is the critic's value of the played action (the ensemble's min, as in the TD target)."""
        actions = self.policy(observations)
        q = self.critic.apply_fn(self.critic.params, observations, actions).min(axis=0)
        return actions, {"displacement": jnp.zeros(observations.shape[:-1]), "q": q}


def create(config: ReBRACConfig, obs_dim: int, action_dim: int, seed: int = 0) -> ReBRACAgent:
    config.validate()
    dtype = jnp.bfloat16 if config.bf16 else None
    rng, critic_key, actor_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    activation = config.activation
    critic_net = CriticEnsemble(config.hidden_dims, 2, config.critic_layer_norm, dtype, activation=activation)
    actor_net = MLP(
        config.hidden_dims,
        action_dim,
        config.actor_layer_norm,
        dtype,
        output_init_scale=config.actor_output_scale,
        activation=activation,
    )
    critic_params = critic_net.init(critic_key, obs, act)
    actor_params = actor_net.init(actor_key, obs)
    return ReBRACAgent(
        rng=rng,
        critic=adam_train_state(critic_net.apply, critic_params, config.learning_rate),
        target_critic_params=critic_params,
        actor=adam_train_state(actor_net.apply, actor_params, config.learning_rate),
        target_actor_params=actor_params,
        config=config,
        action_dim=action_dim,
    )
