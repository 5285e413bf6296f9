"""How fast the locomotion datasets' SAC teacher trains here, against what this machine's matrix products allow.

    python benchmarks/teacher_throughput.py --env hopper --steps 20000     # about 2 minutes on one core

Prints `name: value` lines: `matmul_gflops` (float32 [256, 256] x [256, 256] products in JAX on this process's cores,
best of 5 rounds), `sac_update_gflop` (the matrix products of one SAC update of sbx's 256x256 networks at batch 256,
counted below), `updates_per_s_ceiling` (their ratio: every FLOP at the measured rate), `teacher_steps_per_s` (env
steps of `SACTeacher` training after its uniform-random warm-up, one gradient step per env step, evaluations
included as in a real run) and `teacher_share_of_ceiling`. Pin it to one core (`taskset -c 0`) to measure a lane.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from vgf.data.locomotion import evaluate_actor, make_locomotion_env
from vgf.data.sac_teacher import SACTeacher, TeacherConfig


def matmul_gflops(width: int = 256, batch: int = 256, rounds: int = 5) -> float:
    a, b = jnp.ones((batch, width), jnp.float32), jnp.ones((width, width), jnp.float32)
    product = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b)
    product(a, b).block_until_ready()
    best = np.inf
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(200):
            out = product(a, b)
        out.block_until_ready()
        best = min(best, time.perf_counter() - began)
    return 200 * 2 * (2 * batch * width * width) / best / 1e9


def sac_update_gflop(obs_dim: int, action_dim: int, hidden: int = 256, batch: int = 256) -> float:
    """Matrix-product FLOPs of one SAC update (forward = 2 m n k per layer; a backward pass twice its forward)."""
    def mlp(inputs, outputs):
        return 2 * batch * (inputs * hidden + hidden * hidden + hidden * outputs)

    actor, critic = mlp(obs_dim, 2 * action_dim), mlp(obs_dim + action_dim, 1)
    target = actor + 2 * critic  # next actions, both target critics
    critic_step = 3 * 2 * critic  # both critics, forward and backward
    actor_step = 3 * actor + 3 * 2 * critic  # actor forward/backward through both critics
    return (target + critic_step + actor_step) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--steps", type=int, default=20_000, help="teacher steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=5_000)
    args = parser.parse_args()
    env = make_locomotion_env(args.env)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    print(f"# jax {jax.__version__} on {jax.devices()}, env {env.spec.id}")
    gflops = matmul_gflops()
    print(f"matmul_gflops: {gflops:.1f}")
    update = sac_update_gflop(obs_dim, action_dim)
    print(f"sac_update_gflop: {update:.3f}")
    print(f"updates_per_s_ceiling: {gflops / update:.0f}")
    with tempfile.TemporaryDirectory() as directory:
        config = TeacherConfig(args.env, budget_steps=args.warmup + args.steps, learning_starts=args.warmup,
                               eval_every=args.warmup, checkpoint_every=args.warmup)
        teacher = SACTeacher(directory, config, lambda: make_locomotion_env(args.env))
        teacher.ensure("expert", progress=False, evaluate=lambda actor, i: evaluate_actor(args.env, actor, 10, 0, i))
        rows = teacher.state["evaluations"]  # cumulative seconds at each evaluation; the first ends the warm-up
    steps_per_s = args.steps / (rows[-1]["seconds"] - rows[0]["seconds"])
    print(f"warmup_seconds: {rows[0]['seconds']:.1f}")
    print(f"teacher_steps_per_s: {steps_per_s:.1f}")
    print(f"teacher_share_of_ceiling: {steps_per_s / (gflops / update):.2f}")


if __name__ == "__main__":
    main()
