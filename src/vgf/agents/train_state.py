"""Network parameters with their Adam state, in a form that survives a checkpoint round trip unchanged."""

import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def adam_train_state(apply_fn, params, learning_rate: float) -> TrainState:
    """A TrainState whose step counter is a strongly typed int32, as it is after restoring a checkpoint,
    so a resumed agent reuses the compiled functions of a fresh one instead of compiling them again."""
    state = TrainState.create(apply_fn=apply_fn, params=params, tx=optax.adam(learning_rate))
    return state.replace(step=jnp.zeros((), jnp.int32))
