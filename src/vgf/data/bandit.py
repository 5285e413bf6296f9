"""Offline data for the contextual-bandit sanity check (`vgf.envs.bandit`)."""

from __future__ import annotations

import numpy as np

from vgf.data.dataset import Dataset, DatasetError
from vgf.envs import bandit as bandit_env

__all__ = ["make_bandit_dataset"]


def make_bandit_dataset(num_transitions: int = 20000, seed: int = 0) -> Dataset:
    """Behavior-policy data for the contextual bandit: one-step episodes.

    Contexts and actions come from `vgf.envs.bandit.sample_behavior`, rewards from
    `vgf.envs.bandit.reward`. Every transition ends its episode: masks are 0 (nothing to bootstrap
    from), terminals are 1, and `next_observations` repeats the context (it is never used).
    """
    if int(num_transitions) != num_transitions or num_transitions < 1:
        raise DatasetError(f"bandit: num_transitions must be a positive integer, got {num_transitions!r}")
    num_transitions = int(num_transitions)
    rng = np.random.default_rng(seed)
    contexts, actions, _modes = bandit_env.sample_behavior(rng, num_transitions)
    rewards = bandit_env.reward(contexts[:, 0], actions)
    return Dataset.from_arrays(
        {
            "observations": contexts,
            "actions": actions,
            "rewards": rewards,
            "next_observations": contexts.copy(),
            "masks": np.zeros(num_transitions, dtype=np.float32),
            "terminals": np.ones(num_transitions, dtype=np.float32),
        },
        source=f"bandit(num_transitions={num_transitions}, seed={seed})",
    )
