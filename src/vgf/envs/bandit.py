"""A contextual bandit with a closed-form answer: the known-answer check for behavior-regularized RL.

The context s in [-1, 1] rotates four behavior modes placed on a circle in the 2-D action box. The
behavior policy visits the modes with probabilities 0.4 / 0.3 / 0.1 / 0.2; the reward is a broad bump
centred on the *rarest* mode (opposite the most frequent, poor one), so the best in-support action is
that mode's centre, which a cloned behavior policy plays only one time in ten. A single step ends each episode (no bootstrapping).
"""

from __future__ import annotations

import gymnasium
import numpy as np

MODE_RADIUS = 0.55
MODE_PROBS = np.array([0.4, 0.3, 0.1, 0.2])
MODE_STD = 0.06
REWARD_WIDTH = 0.45
BEST_MODE = 2
OBS_DIM = 1
ACTION_DIM = 2


def mode_centers(contexts: np.ndarray) -> np.ndarray:
    """Centres of the four behavior modes for each context: [B, 4, 2]."""
    contexts = np.asarray(contexts, dtype=np.float64).reshape(-1)
    base_angles = np.pi / 4 + np.arange(4) * np.pi / 2
    angles = base_angles[None, :] + contexts[:, None] * np.pi / 4
    return MODE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def best_action(contexts: np.ndarray) -> np.ndarray:
    """The closed-form best in-support action for each context: [B, 2]."""
    return mode_centers(contexts)[:, BEST_MODE]


def reward(contexts: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The true reward r(s, a) = exp(-|a - a*(s)|^2 / (2 w^2)), in [0, 1]: [B]."""
    actions = np.asarray(actions, dtype=np.float64).reshape(-1, ACTION_DIM)
    sq_dist = np.sum((actions - best_action(contexts)) ** 2, axis=-1)
    return np.exp(-sq_dist / (2 * REWARD_WIDTH**2))


def sample_behavior(rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contexts [num, 1], behavior actions [num, 2] and their mode indices [num]."""
    contexts = rng.uniform(-1.0, 1.0, size=(num, OBS_DIM))
    modes = rng.choice(4, size=num, p=MODE_PROBS)
    centers = mode_centers(contexts[:, 0])[np.arange(num), modes]
    actions = np.clip(centers + MODE_STD * rng.standard_normal((num, ACTION_DIM)), -1.0, 1.0)
    return contexts.astype(np.float32), actions.astype(np.float32), modes


def behavior_mean_reward() -> float:
    """Expected reward of the behavior policy (mode mixture, ignoring the small in-mode spread)."""
    centers = mode_centers(np.zeros(1))[0]
    return float(np.sum(MODE_PROBS * reward(np.zeros(4), centers)))


class ContextualBanditEnv(gymnasium.Env):
    """One-step episodes: observe a context, play a 2-D action, receive r(s, a).

    `info['success']` is 1.0 when the action lands within 0.15 of the best in-support action.
    """

    metadata = {"render_modes": []}
    success_radius = 0.15

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        self._context = np.zeros(OBS_DIM, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._context = self.np_random.uniform(-1.0, 1.0, size=OBS_DIM).astype(np.float32)
        return self._context.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        value = float(reward(self._context, action)[0])
        distance = float(np.linalg.norm(action - best_action(self._context)[0]))
        info = {"success": float(distance <= self.success_radius), "distance_to_best": distance}
        return self._context.copy(), value, True, False, info
