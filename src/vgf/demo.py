"""`vgf demo`: the main job end to end on embedded defaults, on a CPU, in minutes.

Part A, the known-answer bandit: VGF and BC trained on multimodal behavior data; VGF evaluated at
several transport budgets against the closed-form best in-support action; a plot of particles moving
from the reference samples to the best mode.
Part B, OGBench: a small cube-single play dataset generated locally, VGF trained briefly with the
`cpu-small` preset and evaluated at several budgets. Minutes of CPU do not solve this task; the
output says so and reports what each budget gives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vgf.data import generate_ogbench_dataset, make_bandit_dataset, ogbench_dataset_path
from vgf.envs import bandit, make_env
from vgf.evaluation import evaluate
from vgf.training import TrainSettings, load_run, make_policy, train

BANDIT_BUDGETS = (0, 1, 2, 4, 8, 16)
OGBENCH_TASK = "cube-single-play-singletask-task1"
OGBENCH_BUDGETS = (0, 1, 2, 4)


@dataclasses.dataclass(frozen=True)
class DemoSize:
    bandit_steps: int  # updates of each bandit agent
    ogbench_episodes: int  # episodes of the generated cube-single-play dataset
    ogbench_steps: int  # VGF updates on it
    eval_episodes: int  # OGBench evaluation episodes per budget


DEMO_SIZES = {"full": DemoSize(10000, 10, 600, 10), "quick": DemoSize(2000, 2, 20, 2)}


def bandit_rows(agent, label: str, budgets, episodes: int, seed: int) -> list[dict]:
    results = evaluate(functools.partial(make_env, "bandit"), make_policy(agent, seed, budgets), list(budgets), episodes, seed=seed)
    return [
        {
            "agent": label,
            "budget": budget,
            "reward": stats["return"],
            "success": stats["success"],
            "displacement": stats.get("displacement", 0.0),
        }
        for budget, stats in results.items()
    ]


def distance_to_best(agent, budgets, contexts: np.ndarray, seed: int) -> dict[int, float]:
    """Mean distance of the played action from the closed-form best in-support action, per budget."""
    out = {}
    for budget in budgets:
        key = jax.random.PRNGKey(seed)
        actions, _ = agent.act(jnp.asarray(contexts), key, jnp.full(len(contexts), budget), max_steps=budget)
        out[budget] = float(np.linalg.norm(np.asarray(actions) - bandit.best_action(contexts[:, 0]), axis=-1).mean())
    return out


def plot_bandit_particles(agent, dataset, path: Path, budget: int, seed: int = 0) -> Path:
    """Dataset actions, reference particles and transported particles for three contexts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contexts = np.array([[-0.6], [0.0], [0.6]], dtype=np.float32)
    key = jax.random.PRNGKey(seed)
    reference = agent.sample_reference(jnp.asarray(contexts), key, agent.config.num_particles)
    moved = np.asarray(agent.transport(jnp.asarray(contexts), reference, budget))
    reference = np.asarray(reference)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for i, (ax, context) in enumerate(zip(axes, contexts[:, 0])):
        near = np.abs(dataset.observations[:, 0] - context) < 0.05
        ax.scatter(*dataset.actions[near].T, s=4, c="lightgray", label="dataset actions")
        ax.scatter(*reference[i].T, s=14, c="tab:blue", label="reference samples (budget 0)")
        ax.scatter(*moved[i].T, s=14, c="tab:red", label=f"after {budget} transport steps")
        for start, end in zip(reference[i], moved[i]):
            ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color="tab:red", alpha=0.25, lw=0.7))
        best = bandit.best_action(np.array([context]))[0]
        ax.scatter(*best, marker="*", s=260, c="gold", edgecolors="black", label="best in-support action", zorder=5)
        centers = bandit.mode_centers(np.array([context]))[0]
        for p, c in zip(bandit.MODE_PROBS, centers):
            ax.annotate(f"p={p:.1f}", c, textcoords="offset points", xytext=(-14, -18), fontsize=8)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", title=f"context s = {context:+.1f}")
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle("VGF transport on the contextual bandit: particles leave the frequent poor mode for the best one")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_bandit(out: Path, steps: int, seed: int, say: Callable[[str], None]) -> dict:
    dataset = make_bandit_dataset(seed=seed)
    common = dict(task="bandit", preset="bandit", steps=steps, eval_every=steps, log_every=max(1, steps // 4), seed=seed, eval_episodes=200)
    trained = {}
    for agent_name in ("vgf", "bc"):
        run_dir = out / f"bandit-{agent_name}"
        began = time.perf_counter()
        train(TrainSettings(agent=agent_name, run_dir=str(run_dir), eval_budgets=(0,), **common), dataset=dataset)
        trained[agent_name] = load_run(run_dir)[1]
        say(f"trained {agent_name} on the bandit: {steps} updates in {time.perf_counter() - began:.0f} s")
    episodes = 500
    contexts = np.linspace(-1, 1, 401, dtype=np.float32)[:, None]
    rows = bandit_rows(trained["vgf"], "vgf", BANDIT_BUDGETS, episodes, seed)
    rows += bandit_rows(trained["bc"], "bc", (0,), episodes, seed)
    distances = {"vgf": distance_to_best(trained["vgf"], BANDIT_BUDGETS, contexts, seed)}
    distances["bc"] = distance_to_best(trained["bc"], (0,), contexts, seed)
    for row in rows:
        row["distance_to_best"] = distances[row["agent"]][row["budget"]]
    plot = plot_bandit_particles(trained["vgf"], dataset, out / "bandit_particles.png", trained["vgf"].config.eval_vgf_steps, seed)
    return {"rows": rows, "plot": str(plot), "behavior_reward": bandit.behavior_mean_reward(), "best_reward": 1.0}


def run_ogbench(out: Path, episodes: int, steps: int, eval_episodes: int, seed: int, say: Callable[[str], None]) -> dict:
    data_dir = out / "data"
    if not ogbench_dataset_path(data_dir, "cube-single-play").exists():
        began = time.perf_counter()
        generate_ogbench_dataset("cube-single-play", data_dir, episodes=episodes, seed=seed)
        say(f"generated cube-single-play: {episodes} episodes x 1001 steps in {time.perf_counter() - began:.0f} s")
    run_dir = out / "cube-single-vgf"
    settings = TrainSettings(
        agent="vgf",
        task=OGBENCH_TASK,
        run_dir=str(run_dir),
        preset="cpu-small",
        steps=steps,
        eval_every=max(1, steps // 2),
        log_every=max(1, steps // 10),
        seed=seed,
        data_dir=str(data_dir),
        eval_budgets=OGBENCH_BUDGETS,
        eval_episodes=eval_episodes,
        eval_workers=2,
    )
    began = time.perf_counter()
    final = train(settings)
    say(f"trained VGF (cpu-small) on {OGBENCH_TASK}: {steps} updates + evaluations in {time.perf_counter() - began:.0f} s")
    from vgf.evaluation import plot_budget_curve

    results = {
        budget: {name: final[f"eval/budget_{budget}/{name}"] for name in ("success", "return", "displacement")}
        for budget in OGBENCH_BUDGETS
    }
    plot = plot_budget_curve(results, run_dir / "plots" / "budget_curve.png", title=f"VGF on {OGBENCH_TASK}, {steps} updates")
    return {"results": results, "run_dir": str(run_dir), "plot": str(plot), "steps": steps, "eval_episodes": eval_episodes}


def run_demo(out: Path, size: DemoSize, seed: int, say: Callable[[str], None]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = {"bandit": run_bandit(out, size.bandit_steps, seed, say)}
    summary["ogbench"] = run_ogbench(out, size.ogbench_episodes, size.ogbench_steps, size.eval_episodes, seed, say)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
