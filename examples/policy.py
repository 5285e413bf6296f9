"""Train, load and drive a policy from Python: `vgf.fit`, `vgf.load_policy` and a Gymnasium episode loop.

    python examples/policy.py --out runs/policy-example

Trains VGF on the contextual bandit's behavior data (about a minute on 2 cores at the default 3,000 updates), loads
the policy from its run directory and plays the bandit through `gymnasium.make` at transport budgets 0 (the best of
N behavior samples by Q) and 8. The best in-support action has reward 1.0, the behavior policy averages 0.23.
"""

import argparse

import gymnasium
import numpy as np

import vgf
from vgf.data import make_bandit_dataset
from vgf.envs import BANDIT_ENV_ID  # importing vgf.envs registers the bandit with Gymnasium


def play(policy: vgf.Policy, episodes: int, budget: int, seed: int) -> float:
    """Mean return of `episodes` episodes with the policy acting at `budget` transport steps."""
    env = gymnasium.make(BANDIT_ENV_ID)
    returns = []
    observation, _ = env.reset(seed=seed)
    for _ in range(episodes):
        episode_return, done = 0.0, False
        while not done:
            action = policy.act(observation, budget=budget)  # [obs_dim] in, [action_dim] out, NumPy
            observation, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
        observation, _ = env.reset()
    env.close()
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/policy-example")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run_dir = vgf.fit(
        make_bandit_dataset(seed=args.seed), agent="vgf", task="bandit", preset="bandit", steps=args.steps,
        seed=args.seed, run_dir=args.out,
    )
    policy = vgf.load_policy(run_dir, seed=args.seed)  # the seed starts the policy's key sequence: reruns repeat
    print(policy)
    for budget in (0, 8):
        print(f"budget {budget}: mean reward {play(policy, args.episodes, budget, args.seed):.3f} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
