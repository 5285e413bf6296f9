"""The long-horizon study (benchmarks/results/long-horizon/): does the transport pay as the critic matures?

Its steps, each resumable and reading only run directories:

    python benchmarks/long_horizon.py evaluate RESULTS_DIR --set vgf_lr=0.01   # every kept checkpoint, once
    python benchmarks/long_horizon.py evaluate RESULTS_DIR                     # the same with the trained settings
    python benchmarks/long_horizon.py confirm RESULTS_DIR --episodes 100     # last checkpoints again, more episodes
    python benchmarks/long_horizon.py probe RESULTS_DIR                       # what the transport does, held-out states
    python benchmarks/long_horizon.py placebo RESULTS_DIR --steps 50000       # transport in random directions
    python benchmarks/long_horizon.py report RESULTS_DIR OUT_DIR              # tables and figures, unfinished runs too

`evaluate` runs `vgf eval RUN --step N [--set ...]` on each kept checkpoint that is one of the run's evaluation
steps and has no such record yet, at the run's own evaluation budgets, episodes and seed, so each record pairs with
the evaluation made during training. With `--set` it evaluates the budget agents (VGF); without, every agent, with
its trained settings: that evaluation repeats the one made while training, and adds the critic's value error at the
initial states (`vgf eval` records `q_start` and `discounted_return`). `confirm` evaluates each finished run's last
checkpoint (or the kept checkpoints of `--steps`) again with more episodes, from other initial states (reset seeds
`--seed` + the run's seed + i): readings with standard errors and, since every budget and every agent of a seed starts
episode i from the same state, comparisons episode by episode (exact sign tests). `probe` looks at what the transport
does on held-out states (the task's validation file) at each kept evaluation step of the budget agents: the critic's
value of the action played at each budget, how much its ensemble members disagree there, and how far that action lies
from the dataset's action at the state, beside the same at the dataset's actions. `placebo` is `confirm` for VGF
with the critic's direction replaced by random ones of the same length: what moves of that size do without the
critic's information (the record's setting is `transport=random`; with `--set`, at other test-time settings).
`report` writes `report.md` (how far each run got, success over training per agent, VGF's success over updates x
budget at each test-time setting, the critic's training and held-out losses, mean Q and value error, the probes and
the confirmations),
`learning_curves.png`, `budget_heatmap.png` and `critic_health.png`, and prints the markdown. Figures are means over
the seeds that reached each step; the tables give every seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vgf.agents import config_from_dict, get_agent, typed_values, with_test_time_settings
from vgf.agents.vgf import VGFAgent
from vgf.core import aggregate_ensemble
from vgf.data import load_task_datasets
from vgf.envs import make_env, task_spec
from vgf.evaluation import EnvPool, env_workers
from vgf.cli import main as vgf_main
from vgf.cli import override
from vgf.files import atomic_file, atomic_write_text
from vgf.training import eval_record, eval_record_name, evaluate_agent, list_checkpoints, load_run, settings_suffix

HEALTH = ("train/critic_loss", "val/critic_loss", "train/q_mean", "val/q_mean")
TRAINED = "trained"  # the setting label of evaluations with the run's own test-time settings


@dataclass
class Confirmation:
    """A kept checkpoint evaluated again with more episodes, from other initial states (`confirm`)."""

    seed: int  # the evaluation's base reset seed
    episodes: int
    per_episode: dict[int, dict[str, list[float]]]  # budget -> statistic (success, length, ...) -> each episode's


@dataclass
class Run:
    """One run directory: its settings and what it has logged so far."""

    path: Path
    task: str
    agent: str
    seed: int
    steps: int
    eval_every: int
    budgets: tuple[int, ...]
    episodes: int
    config: dict
    rows: list[dict]
    extra: dict[tuple[str, int], dict[int, float]] = field(default_factory=dict)  # (setting, step) -> budget -> success
    # (setting or TRAINED, step) -> budget -> {q_start: the critic's value of the first action, discounted_return,
    # value_error: their difference}
    start_values: dict[tuple[str, int], dict[int, dict[str, float]]] = field(default_factory=dict)
    # (setting or TRAINED, step) -> the `confirm` evaluation (of the records with other seeds, the last by file name)
    confirmations: dict[tuple[str, int], Confirmation] = field(default_factory=dict)
    # (setting or TRAINED, step) -> "data" or budget -> the `probe` means (q, q_std, distance_to_data, displacement)
    probes: dict[tuple[str, int], dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def uses_budgets(self) -> bool:
        return get_agent(self.agent).USES_BUDGETS

    @property
    def eval_rows(self) -> list[dict]:
        return [row for row in self.rows if any(key.startswith("eval/") for key in row)]

    @property
    def reached(self) -> int:
        return max((row["step"] for row in self.rows), default=0)

    def success(self, step: int, budget: int) -> float | None:
        """Success at (step, budget) from the evaluation made during training."""
        for row in self.eval_rows:
            if row["step"] == step and f"eval/budget_{budget}/success" in row:
                return number(row[f"eval/budget_{budget}/success"])
        return None


def number(value) -> float:
    return float(value) if value is not None else math.nan  # the logger writes non-finite values as strings


def setting_label(record: dict) -> str:
    """A record's changed test-time settings as 'key=value ...' (sorted); '' for the trained ones."""
    return " ".join(f"{key}={value}" for key, value in sorted(record["test_time_settings"].items()))


def read_runs(results_dir: Path) -> list[Run]:
    runs = []
    for path in sorted(results_dir.iterdir()):
        if not (path / "config.json").is_file():
            continue
        info = json.loads((path / "config.json").read_text())
        settings, config = info["settings"], info["agent_config"]
        metrics = path / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
        run = Run(path, settings["task"], settings["agent"], settings["seed"], settings["steps"], settings["eval_every"],
                  tuple(settings["eval_budgets"]), settings["eval_episodes"], config, rows)
        for record_path in sorted((path / "eval").glob("budgets_step*.json")):
            record = json.loads(record_path.read_text())
            setting = setting_label(record)
            if record["seed"] != run.seed:  # other initial states: a `confirm` evaluation, or not this study's
                if all("success" in r.get("per_episode", {}) for r in record["results"].values()):
                    run.confirmations[(setting or TRAINED, record["step"])] = Confirmation(
                        record["seed"], record["episodes"],
                        {int(b): r["per_episode"] for b, r in record["results"].items()})
                continue
            if setting:  # the trained settings' success is in the metrics, from the evaluation made while training
                run.extra[(setting, record["step"])] = {int(b): r["success"] for b, r in record["results"].items()}
            values = {int(b): {"q_start": r["q_start"], "discounted_return": r["discounted_return"],
                               "value_error": r["q_start"] - r["discounted_return"]}
                      for b, r in record["results"].items() if "q_start" in r and "discounted_return" in r}
            if values:
                run.start_values[(setting or TRAINED, record["step"])] = values
        for record_path in sorted((path / "eval").glob("probe_step*.json")):
            record = json.loads(record_path.read_text())
            setting = setting_label(record)
            run.probes[(setting or TRAINED, record["step"])] = record["results"]
        runs.append(run)
    if not runs:
        raise FileNotFoundError(f"{results_dir} holds no run directory (a folder with config.json)")
    tasks = sorted({run.task for run in runs})
    if len(tasks) > 1:  # the tables and figures average an agent's runs over seeds, never over tasks
        raise ValueError(f"{results_dir} holds runs of several tasks ({', '.join(tasks)}): report one task per directory")
    return runs


# ----------------------------------------------------------------------------------------------- evaluate


def applied(overrides: list[str], run: Run) -> dict:
    """The settings as `vgf eval` applies and names them (`vgf.agents.typed_values`)."""
    return typed_values(config_from_dict(run.agent, run.config), dict(override(item) for item in overrides))


def eval_once(run: Run, step: int, episodes: int, seed: int, overrides: list[str]) -> int | None:
    """`vgf eval` of one kept checkpoint at the run's budgets, unless its record exists (None); else its exit code."""
    settings = applied(overrides, run)
    if (run.path / "eval" / eval_record_name(step, seed, settings)).exists():
        return None
    argv = ["eval", str(run.path), "--step", str(step), "--vgf-steps", ",".join(map(str, run.budgets)),
            "--episodes", str(episodes), "--seed", str(seed)]
    for item in overrides:
        argv += ["--set", item]
    print(f"{run.path.name}: step {step}, {episodes} episodes{settings_suffix(settings)}", flush=True)
    return vgf_main(argv)


def evaluate(results_dir: Path, overrides: list[str]) -> int:
    """`vgf eval --step N [--set ...]` on every kept evaluation-step checkpoint, once each: of every budget agent with
    `overrides`, of every agent without."""
    codes = []
    for run in read_runs(results_dir):
        if overrides and not run.uses_budgets:
            continue
        for step, _ in list_checkpoints(run.path / "checkpoints"):
            if step and (step % run.eval_every == 0 or step == run.steps):
                codes.append(eval_once(run, step, run.episodes, run.seed, overrides))
    done, failed = codes.count(0), sum(code not in (None, 0) for code in codes)
    print(f"{done} evaluation(s) written, {failed} failed")
    return 1 if failed else 0


def confirm(results_dir: Path, episodes: int, seed: int, steps: list[int], overrides: list[str]) -> int:
    """`vgf eval --step N --episodes E --seed SEED+run seed [--set ...]` once on each kept checkpoint of `steps` (none:
    each run's last), of every budget agent with `overrides`, of every agent without."""
    if episodes <= 0 or seed <= 0:
        raise ValueError(f"--episodes and --seed must be positive (seed 0 + the run's seed repeats the study's initial "
                         f"states), got {episodes} and {seed}")
    codes, missing = [], 0
    for run in read_runs(results_dir):
        if overrides and not run.uses_budgets:
            continue
        kept = {step for step, _ in list_checkpoints(run.path / "checkpoints")}
        for step in steps or [run.steps]:
            if step in kept:
                codes.append(eval_once(run, step, episodes, seed + run.seed, overrides))
            else:
                missing += 1
    done, failed = codes.count(0), sum(code not in (None, 0) for code in codes)
    print(f"{done} evaluation(s) written, {failed} failed, {missing} checkpoint(s) not reached or not kept")
    return 1 if failed else 0


PROBE_SEED = 0  # the held-out states and the reference's noise: the same at every checkpoint


@functools.partial(jax.jit, static_argnames=("budgets",))
def transport_probe(agent, observations, dataset_actions, key, budgets: tuple[int, ...]) -> dict:
    """Means over the states of what acting at each budget plays: the critic's value (its acting aggregate), the
    ensemble's standard deviation there (where its members disagree, the critic knows least), the distance from the
    dataset's action at the state and from the reference sample the particle started as; 'data': the first two at
    the dataset's actions. All budgets move the same reference particles."""
    cfg = agent.config

    def critic_view(actions):
        q = agent.q_values(observations, actions)
        return {"q": aggregate_ensemble(q, cfg.select_q_agg).mean(), "q_std": q.std(axis=0).mean()}

    sample_key, select_key = jax.random.split(key)
    reference = agent.sample_reference(observations, sample_key, cfg.num_particles)
    results = {"data": critic_view(dataset_actions)}
    for budget in budgets:
        actions, aux = agent.act_from_reference(observations, reference, select_key, max_steps=budget)
        results[str(budget)] = critic_view(actions) | {
            "distance_to_data": jnp.linalg.norm(actions - dataset_actions, axis=-1).mean(),
            "displacement": aux["displacement"].mean()}
    return results


def probe(results_dir: Path, states: int, overrides: list[str]) -> int:
    """`transport_probe` on `states` validation states at each kept evaluation step of every budget agent, once."""
    if states <= 0:
        raise ValueError(f"--states must be positive, got {states}")
    done = 0
    held_out = {}
    for run in read_runs(results_dir):
        if not run.uses_budgets:
            continue
        settings = applied(overrides, run)
        for step, _ in list_checkpoints(run.path / "checkpoints"):
            out = run.path / "eval" / f"probe_step{step}{settings_suffix(settings)}.json"
            if step == 0 or (step % run.eval_every and step != run.steps) or out.exists():
                continue
            run_settings, agent, _ = load_run(run.path, step)
            if run.task not in held_out:
                validation = load_task_datasets(run.task, run_settings.data_dir)[1]
                if validation is None:
                    raise ValueError(f"{run.task} has no validation split to probe the transport on")
                rows = np.random.default_rng(PROBE_SEED).choice(validation.size, min(states, validation.size),
                                                               replace=False)
                held_out[run.task] = (jnp.asarray(validation.observations[rows]), jnp.asarray(validation.actions[rows]))
            agent = with_test_time_settings(run.agent, agent, settings)
            found = transport_probe(agent, *held_out[run.task], jax.random.PRNGKey(PROBE_SEED), run.budgets)
            record = {"step": step, "states": int(held_out[run.task][0].shape[0]), "test_time_settings": settings,
                      "results": jax.tree_util.tree_map(float, found)}
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(record, indent=2))
            print(f"{run.path.name}: step {step}{settings_suffix(settings)} probed", flush=True)
            done += 1
    print(f"{done} probe(s) written")
    return 0


PLACEBO = {"transport": "random"}  # the test-time setting of the placebo's records


class RandomDirectionVGF(VGFAgent):
    """The placebo: VGF whose transport follows a random direction at each particle and step, as long as the critic's
    action-gradient there (drawn from a key that the batch's particles fix, so a rerun repeats it). The rest is the
    agent's own: its reference samples, the kernel's repulsion, the optimiser and step size, and the pick by the
    critic's value."""

    def q_score(self, observations):
        critic_score = VGFAgent.q_score(self, observations)

        def random_score(particles):
            length = jnp.linalg.norm(critic_score(particles), axis=-1, keepdims=True)
            key = jax.random.fold_in(jax.random.PRNGKey(PROBE_SEED),
                                     jax.lax.bitcast_convert_type(particles, jnp.int32).sum())
            direction = jax.random.normal(key, particles.shape)
            return direction / jnp.linalg.norm(direction, axis=-1, keepdims=True) * length

        return random_score


def placebo(results_dir: Path, episodes: int, seed: int, steps: list[int], overrides: list[str]) -> int:
    """`confirm` of every VGF run with `RandomDirectionVGF` (and `overrides`), written as `vgf eval` writes its
    records."""
    if episodes <= 0 or seed <= 0:
        raise ValueError(f"--episodes and --seed must be positive, got {episodes} and {seed}")
    done = 0
    for run in read_runs(results_dir):
        if run.agent != "vgf":
            continue
        kept = {step for step, _ in list_checkpoints(run.path / "checkpoints")}
        changed = applied(overrides, run)
        settings = {**changed, **PLACEBO}
        for step in steps or [run.steps]:
            out = run.path / "eval" / eval_record_name(step, seed + run.seed, settings)
            if step not in kept or out.exists():
                continue
            print(f"{run.path.name}: step {step}, {episodes} episodes, placebo{settings_suffix(changed)}", flush=True)
            _, agent, _ = load_run(run.path, step)
            agent = with_test_time_settings(run.agent, agent, changed)
            agent = RandomDirectionVGF(**{f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)})
            began = time.perf_counter()
            workers = env_workers(None, task_spec(run.task).max_episode_steps)
            with EnvPool(functools.partial(make_env, run.task), workers=workers) as pool:
                results = evaluate_agent(agent, run.task, run.budgets, episodes, seed + run.seed, pool, progress=True,
                                         per_episode=True)
            record = eval_record(step, episodes, seed + run.seed, time.perf_counter() - began, settings, results)
            atomic_write_text(out, json.dumps(record, indent=2))
            done += 1
    print(f"{done} placebo evaluation(s) written")
    return 0


# ----------------------------------------------------------------------------------------------- report


def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def cell(values: list[float | None]) -> str:
    """'mean (v1, v2)' over seeds; '-' where no seed has the value yet."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.2f}"
    return f"{mean(present):.2f} ({', '.join(f'{v:.2f}' for v in present)})"


def by_agent(runs: list[Run]) -> dict[str, list[Run]]:
    grouped = defaultdict(list)
    for run in runs:
        grouped[run.agent].append(run)
    return {agent: sorted(group, key=lambda run: run.seed) for agent, group in sorted(grouped.items())}


def eval_steps(runs: list[Run]) -> list[int]:
    return sorted({row["step"] for run in runs for row in run.eval_rows})


def heat(runs: list[Run], setting: str | None) -> tuple[list[int], list[int], np.ndarray]:
    """(steps, budgets, success[step, budget] averaged over the seeds that have it); setting None: training's own."""
    steps = sorted({step for run in runs for step in (
        [row["step"] for row in run.eval_rows] if setting is None else [s for (name, s) in run.extra if name == setting])})
    budgets = sorted({b for run in runs for b in run.budgets})
    grid = np.full((len(steps), len(budgets)), np.nan)
    for i, step in enumerate(steps):
        for j, budget in enumerate(budgets):
            values = [run.success(step, budget) if setting is None else run.extra.get((setting, step), {}).get(budget)
                      for run in runs]
            grid[i, j] = mean(values)
    return steps, budgets, grid


def progress_table(runs: list[Run]) -> list[str]:
    lines = ["| run | updates done | of | last evaluation |", "|---|---|---|---|"]
    for run in runs:
        last = max((row["step"] for row in run.eval_rows), default=0)
        lines.append(f"| {run.path.name} | {run.reached} | {run.steps} | {last} |")
    return lines


def learning_table(groups: dict[str, list[Run]]) -> list[str]:
    header = ["updates"]
    columns = []
    for agent, runs in groups.items():
        budgets = sorted({b for run in runs for b in run.budgets}) if runs[0].uses_budgets else [0]
        for budget in budgets:
            columns.append((agent, budget))
            header.append(f"{agent} budget {budget}" if runs[0].uses_budgets else agent)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in eval_steps([run for runs in groups.values() for run in runs]):
        values = [cell([run.success(step, budget) for run in groups[agent]]) for agent, budget in columns]
        lines.append(f"| {step} | " + " | ".join(values) + " |")
    return lines


def heat_table(runs: list[Run], setting: str | None) -> list[str]:
    steps, budgets, _ = heat(runs, setting)
    lines = ["| updates | " + " | ".join(f"budget {b}" for b in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
    for step in steps:
        values = [cell([run.success(step, b) if setting is None else run.extra.get((setting, step), {}).get(b)
                        for run in runs]) for b in budgets]
        lines.append(f"| {step} | " + " | ".join(values) + " |")
    return lines


def health_table(groups: dict[str, list[Run]]) -> list[str]:
    lines = ["| agent | updates | " + " | ".join(HEALTH) + " |", "|" + "---|" * (len(HEALTH) + 2)]
    for agent, runs in groups.items():
        for step in eval_steps(runs):
            rows = [next((row for row in run.eval_rows if row["step"] == step), {}) for run in runs]
            values = [cell([number(row[key]) if key in row else None for row in rows]) for key in HEALTH]
            if any(value != "-" for value in values):  # agents without a critic (BC) have none
                lines.append(f"| {agent} | {step} | " + " | ".join(values) + " |")
    return lines


def value_error_columns(groups: dict[str, list[Run]]) -> list[tuple[str, str, int]]:
    """(agent, setting, budget) with value errors on record: budget 0 and, for budget agents, their largest budget."""
    columns = []
    for agent, runs in groups.items():
        settings = sorted({setting for run in runs for setting, _ in run.start_values}, key=lambda s: s != TRAINED)
        budgets = [0, max(b for run in runs for b in run.budgets)] if runs[0].uses_budgets else [0]
        columns += [(agent, setting, budget) for setting in settings for budget in dict.fromkeys(budgets)]
    return columns


def start_values(runs: list[Run], setting: str, step: int, budget: int, quantity: str) -> list[float | None]:
    """`quantity` (q_start, discounted_return or value_error) of each seed at (setting, step, budget)."""
    return [run.start_values.get((setting, step), {}).get(budget, {}).get(quantity) for run in runs]


def value_error_table(groups: dict[str, list[Run]], quantity: str, settings: tuple[str, ...] | None = None) -> list[str]:
    columns = [c for c in value_error_columns(groups) if settings is None or c[1] in settings]
    if not columns:
        return ["No record has it yet (`python benchmarks/long_horizon.py evaluate RESULTS_DIR` writes them)."]
    header = ["updates", *(agent + (f" budget {budget}" if groups[agent][0].uses_budgets else "")
                           + ("" if setting == TRAINED else f", {setting}") for agent, setting, budget in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    steps = sorted({step for runs in groups.values() for run in runs for _, step in run.start_values})
    for step in steps:
        values = [cell(start_values(groups[agent], setting, step, budget, quantity)) for agent, setting, budget in columns]
        lines.append(f"| {step} | " + " | ".join(values) + " |")
    return lines


def probe_table(runs: list[Run]) -> list[str]:
    """Per probed (step, setting): the dataset's actions, then each budget's played action, as the critic sees them."""
    keys = sorted({key for run in runs for key in run.probes}, key=lambda key: (key[1], key[0] != TRAINED, key[0]))
    budgets = sorted({b for run in runs for b in run.budgets})
    columns = [("data", "q"), *((str(b), "q") for b in budgets), ("data", "q_std"),
               *((str(b), "q_std") for b in budgets), *((str(b), "distance_to_data") for b in budgets)]
    names = {"q": "Q", "q_std": "ensemble std", "distance_to_data": "distance to data"}
    lines = ["| updates | setting | " + " | ".join(
        f"{names[quantity]}, {'data' if where == 'data' else 'budget ' + where}" for where, quantity in columns) + " |",
        "|" + "---|" * (len(columns) + 2)]
    for setting, step in keys:
        values = [cell([run.probes[(setting, step)].get(where, {}).get(quantity) if (setting, step) in run.probes
                        else None for run in runs]) for where, quantity in columns]
        lines.append(f"| {step} | {setting} | " + " | ".join(values) + " |")
    return lines


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (McNemar's, on the discordant pairs): the chance of a split at least this uneven
    if either side were as likely to win each pair."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def confirmed(groups: dict[str, list[Run]]) -> list[tuple[int, str]]:
    """The (step, setting) pairs with a `confirm` evaluation, the trained settings first at each step."""
    return sorted({(step, setting) for runs in groups.values() for run in runs for setting, step in run.confirmations},
                  key=lambda pair: (pair[0], pair[1] != TRAINED, pair[1]))


def confirm_table(groups: dict[str, list[Run]], solved_lengths: bool = False) -> list[str]:
    """Success ± its standard error per run and pooled over each agent's seeds, per step, setting and budget; with
    `solved_lengths`, the mean length of the solved episodes (and how many) instead."""
    budgets = sorted({b for runs in groups.values() for run in runs for c in run.confirmations.values()
                      for b in c.per_episode})
    lines = ["| updates | agent | seed | setting | episodes | " + " | ".join(f"budget {b}" for b in budgets) + " |",
             "|" + "---|" * (len(budgets) + 5)]
    for step, setting in confirmed(groups):
        for agent, runs in groups.items():
            found = [(str(run.seed), [run.confirmations[(setting, step)]]) for run in runs
                     if (setting, step) in run.confirmations]
            if len(found) > 1:
                found.append(("all", [c for _, (c,) in found]))
            for label, parts in found:
                values = []
                for b in budgets:
                    columns = [c.per_episode[b] for c in parts if b in c.per_episode]
                    outcomes = [x for column in columns for x in column["success"]]
                    if solved_lengths:
                        solved = [n for column in columns for x, n in zip(column["success"], column["length"]) if x]
                        values.append(f"{np.mean(solved):.0f} ({len(solved)})" if solved else "-")
                    elif outcomes:
                        p = float(np.mean(outcomes))
                        values.append(f"{p:.2f} ± {math.sqrt(p * (1 - p) / len(outcomes)):.2f}")
                    else:
                        values.append("-")
                count = sum(c.episodes for c in parts)
                lines.append(f"| {step} | {agent} | {label} | {setting} | {count} | " + " | ".join(values) + " |")
    return lines


Pairs = list[tuple[int, dict[str, list[float]], dict[str, list[float]]]]  # (run seed, A's per-episode values, B's)


def paired_rows(groups: dict[str, list[Run]]) -> list[tuple[int, str, str, str, Pairs, bool]]:
    """(step, A, B, setting, pairs, one critic) for each comparison on shared initial states: each budget agent's
    budgets against its budget 0 (one critic values both); under a placebo's settings, also each budget along the
    critic's gradient (the other settings the same) against the same budget in random directions; then, with the
    trained settings, its budget 0 against every other agent of the same seed."""
    comparisons = []
    budget_agents = [agent for agent, runs in groups.items() if runs[0].uses_budgets]
    placebo_label = setting_label({"test_time_settings": PLACEBO})
    for step, setting in confirmed(groups):
        along = " ".join(part for part in setting.split() if part != placebo_label) or TRAINED
        for agent in budget_agents:
            found = [(run.seed, run.confirmations[(setting, step)]) for run in groups[agent]
                     if (setting, step) in run.confirmations]
            for b in sorted({b for _, c in found for b in c.per_episode if b}):
                pairs = [(seed, c.per_episode[b], c.per_episode[0]) for seed, c in found
                         if b in c.per_episode and 0 in c.per_episode]
                comparisons.append((step, f"{agent} budget {b}", f"{agent} budget 0", setting, pairs, True))
            if along == setting:
                continue
            twins = [(run.seed, run.confirmations[(along, step)], run.confirmations[(setting, step)])
                     for run in groups[agent]
                     if (along, step) in run.confirmations and (setting, step) in run.confirmations
                     and run.confirmations[(along, step)].seed == run.confirmations[(setting, step)].seed]
            for b in sorted({b for _, _, blind in twins for b in blind.per_episode if b}):
                pairs = [(seed, gradient.per_episode[b], blind.per_episode[b]) for seed, gradient, blind in twins
                         if b in gradient.per_episode and b in blind.per_episode]
                if pairs:
                    comparisons.append((step, f"{agent} budget {b}, {along}", f"{agent} budget {b}", setting, pairs,
                                        True))
        if setting != TRAINED:
            continue
        for agent in budget_agents:
            for other in groups:
                pairs = []
                for run in groups[agent] if other != agent else []:
                    mine = run.confirmations.get((TRAINED, step))
                    twin = next((r.confirmations.get((TRAINED, step)) for r in groups[other] if r.seed == run.seed),
                                None)
                    if mine is not None and twin is not None and mine.seed == twin.seed:
                        pairs.append((run.seed, mine.per_episode[0], twin.per_episode[0]))
                if pairs:
                    comparisons.append((step, f"{agent} budget 0", other, TRAINED, pairs, False))
    return comparisons


def paired_difference(pairs: Pairs, key: str) -> str:
    """The mean of A's `key` minus B's over the paired episodes ± its standard error; '-' where one side lacks it."""
    if not all(key in x and key in y for _, x, y in pairs):
        return "-"
    difference = np.concatenate([np.subtract(x[key], y[key]) for _, x, y in pairs])
    return f"{difference.mean():.1f} ± {difference.std(ddof=1) / math.sqrt(difference.size):.1f}"


def per_seed_difference(pairs: Pairs, key: str) -> str:
    """`paired_difference` of each seed alone, `seed: mean ± se` joined by '; ' (the pooled figure can hide seeds
    that disagree); '-' for a single seed."""
    if len(pairs) < 2:
        return "-"
    return "; ".join(f"{seed}: {paired_difference([(seed, x, y)], key)}"
                     for seed, x, y in sorted(pairs, key=lambda pair: pair[0]))


def paired_table(groups: dict[str, list[Run]]) -> list[str]:
    lines = ["| updates | A | B | setting | seeds | A only | B only | both | neither | p (exact sign test) | "
             "discounted return, A - B | the critic's value of the first action, A - B | "
             "discounted return, A - B, each seed |",
             "|" + "---|" * 13]
    for step, first, second, setting, pairs, one_critic in paired_rows(groups):
        a = np.concatenate([np.asarray(x["success"], bool) for _, x, _ in pairs])
        b = np.concatenate([np.asarray(y["success"], bool) for _, _, y in pairs])
        wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
        critic_gain = paired_difference(pairs, "q_start") if one_critic else "-"  # two critics' values do not compare
        lines.append(f"| {step} | {first} | {second} | {setting} | {len(pairs)} | {wins} | {losses} | "
                     f"{int(np.sum(a & b))} | {int(np.sum(~a & ~b))} | {sign_test(wins, losses):.3f} | "
                     f"{paired_difference(pairs, 'discounted_return')} | {critic_gain} | "
                     f"{per_seed_difference(pairs, 'discounted_return')} |")
    return lines


def save(figure: Figure, path: Path) -> None:
    with atomic_file(path) as handle:
        figure.savefig(handle, dpi=110, format="png")


def plot_learning(groups: dict[str, list[Run]], path: Path) -> None:
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for index, (agent, runs) in enumerate(groups.items()):
        budgets = sorted({b for run in runs for b in run.budgets}) if runs[0].uses_budgets else [0]
        for shade, budget in enumerate(budgets):
            steps = eval_steps(runs)
            values = [mean([run.success(step, budget) for run in runs]) for step in steps]
            label = f"{agent} budget {budget}" if runs[0].uses_budgets else agent
            ax.plot(steps, values, marker="o", color=f"C{index}", alpha=1.0 - 0.7 * shade / max(1, len(budgets) - 1),
                    linestyle="-" if budget == 0 else "--", label=f"{label} ({len(runs)} seeds)")
    ax.set_xlabel("updates")
    ax.set_ylabel("success rate (mean over seeds)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save(figure, path)


def plot_heatmaps(vgf_runs: list[Run], settings: list[str | None], labels: list[str], path: Path) -> None:
    figure = Figure(figsize=(4.5 * len(settings), 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (setting, label) in enumerate(zip(settings, labels)):
        ax = figure.add_subplot(1, len(settings), index + 1)
        steps, budgets, grid = heat(vgf_runs, setting)
        if not steps:
            ax.set_title(f"{label}: not evaluated yet", fontsize=9)
            continue
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        for i in range(len(steps)):
            for j in range(len(budgets)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < 0.5 else "black")
        ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
        ax.set_yticks(range(len(steps)), [f"{s // 1000}k" if s % 1000 == 0 else str(s) for s in steps])
        ax.set_xlabel("transport budget (steps)")
        ax.set_ylabel("updates")
        ax.set_title(f"VGF success, {label}", fontsize=9)
    figure.colorbar(image, ax=figure.axes, shrink=0.8, label="success (mean over seeds)")
    save(figure, path)


def plot_health(groups: dict[str, list[Run]], path: Path) -> None:
    figure = Figure(figsize=(15, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    panels = [figure.add_subplot(1, 3, k + 1) for k in range(3)]
    for index, (agent, runs) in enumerate(groups.items()):
        steps = eval_steps(runs)
        for ax, (train_key, val_key) in zip(panels, (HEALTH[:2], HEALTH[2:])):
            for key, style, marker in ((train_key, "--", "x"), (val_key, "-", "o")):
                values = [mean([number(row[key]) for run in runs for row in run.eval_rows
                                if row["step"] == step and key in row]) for step in steps]
                if not all(math.isnan(v) for v in values):
                    ax.plot(steps, values, style, marker=marker, color=f"C{index}", label=f"{agent} {key.split('/')[0]}")
    panels[0].set_ylabel("critic loss (TD error)")
    panels[0].set_yscale("log")
    panels[1].set_ylabel("mean Q on the batch")
    agents = list(groups)
    for agent, setting, budget in value_error_columns(groups):
        runs = groups[agent]
        steps = sorted({step for run in runs for name, step in run.start_values if name == setting})
        values = [mean(start_values(runs, setting, step, budget, "value_error")) for step in steps]
        label = f"{agent}" + (f" budget {budget}" if runs[0].uses_budgets else "") + (
            "" if setting == TRAINED else f", {setting}")
        panels[2].plot(steps, values, "-" if setting == TRAINED else ":", marker="o" if budget == 0 else "s",
                       color=f"C{agents.index(agent)}", label=label)
    panels[2].axhline(0.0, color="grey", linewidth=0.8)
    panels[2].set_ylabel("Q(first action) - discounted return")
    for ax in panels:
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save(figure, path)


def report(results_dir: Path, out_dir: Path) -> int:
    runs = read_runs(results_dir)
    groups = by_agent(runs)
    vgf_runs = [run for run in runs if run.uses_budgets]
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Long-horizon study: {runs[0].task}", "", "Built by `benchmarks/long_horizon.py report` from the "
             "run directories; a value in brackets is each seed's, before it their mean.", "", "## How far each run got",
             "", *progress_table(runs), "", "## Success over training (evaluations made while training)", "",
             *learning_table(groups), ""]
    settings: list[str | None] = [None]
    labels = [f"vgf_lr {vgf_runs[0].config['vgf_lr']:g} (trained)" if vgf_runs else "trained"]
    for setting in sorted({name for run in vgf_runs for name, _ in run.extra}):
        settings.append(setting)
        labels.append(setting.replace("=", " "))
    for setting, label in zip(settings, labels):
        lines += [f"## VGF: success over updates x budget, {label}", "", *heat_table(vgf_runs, setting), ""]
    lines += ["## The critic: training and held-out losses and mean Q", "", *health_table(groups), "",
              "## The critic's value error at the initial states", "",
              "The critic's value of the first action played minus the discounted return the episode then got, mean "
              "over the evaluation's episodes (positive: the critic overestimates what its policy achieves). From the "
              "`evaluate` records: the evaluations made while training predate the measure. An episode cut by its time "
              "limit leaves out the return after it: at most discount^length of a whole discounted return (0.7% after "
              "500 steps at 0.99).", "",
              *value_error_table(groups, "value_error"), "",
              "Its two terms with the trained settings: the critic's value of the first action (`q_start`), then the "
              "discounted return.", "", *value_error_table(groups, "q_start", (TRAINED,)), "",
              *value_error_table(groups, "discounted_return", (TRAINED,)), ""]
    if any(run.probes for run in vgf_runs):
        lines += ["## What the transport does, on held-out states", "",
                  "From the `probe` records, on validation states (the same ones at every checkpoint): "
                  "the critic's value of the dataset's action and of the action played at each budget, its ensemble's "
                  "standard deviation there (where the members disagree, the critic has least to go on), and the "
                  "played action's distance from the dataset's action (actions lie in [-1, 1]^A).", "",
                  *probe_table(vgf_runs), ""]
    if any(run.confirmations for run in runs):
        seeds = sorted({c.seed - run.seed for run in runs for c in run.confirmations.values()})
        lines += ["## Again with more episodes", "", "From the `confirm` evaluations: other initial states than the "
                  f"ones above (reset seeds {'/'.join(map(str, seeds))} + the run's seed + episode). Success ± one "
                  "standard error (binomial); `all` pools the seeds' episodes.", "", *confirm_table(groups), "",
                  "The mean length of the solved episodes (in brackets, how many were solved): how fast a policy "
                  "solves the task when it does.", "", *confirm_table(groups, solved_lengths=True), "",
                  "Episode by episode: every budget, and every agent of one seed, starts episode i from the same "
                  "state. `A only` counts the episodes A solved and B did not. The p-value is the exact two-sided "
                  "sign test on those discordant episodes, pooled over the seeds. Then the mean difference of the "
                  "discounted returns, the critics' own objective, ± its standard error over the pairs: a policy can "
                  "solve fewer episodes and still solve them sooner. Beside it, for two budgets of one agent, what its "
                  "critic expects the move to gain at the first step: the difference of its values of the two first "
                  "actions. The last column splits the discounted-return difference by seed, where the pooled "
                  "figure could hide seeds that disagree. Under a placebo's settings, `vgf budget b, S` against `vgf budget "
                  "b` is the transport along the critic's gradient (settings S) against the same moves in random "
                  "directions.", "",
                  *paired_table(groups), ""]
    text = "\n".join(lines)
    atomic_write_text(out_dir / "report.md", text)
    plot_learning(groups, out_dir / "learning_curves.png")
    if vgf_runs:
        plot_heatmaps(vgf_runs, settings, labels, out_dir / "budget_heatmap.png")
    plot_health(groups, out_dir / "critic_health.png")
    print(text)
    print(f"wrote {out_dir / 'report.md'} and its figures")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="evaluate every kept checkpoint with test-time settings changed")
    ev.add_argument("results_dir", type=Path)
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a test-time field, as `vgf eval --set` takes it, e.g. vgf_lr=0.01 (none: the trained ones)")
    con = commands.add_parser("confirm", help="evaluate kept checkpoints again with more episodes")
    con.add_argument("results_dir", type=Path)
    con.add_argument("--episodes", type=int, default=100)
    con.add_argument("--seed", type=int, default=1000,
                     help="base reset seed, added to each run's seed (default 1000: away from the study's own)")
    con.add_argument("--steps", type=lambda text: [int(x) for x in text.split(",")], default=[],
                     help="kept checkpoints to evaluate, e.g. 30000,100000 (default: each run's last)")
    con.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a test-time field, as in `evaluate`")
    pro = commands.add_parser("probe", help="what the transport does on held-out states, at each kept checkpoint")
    pro.add_argument("results_dir", type=Path)
    pro.add_argument("--states", type=int, default=2048, help="validation states to probe (default 2048)")
    pro.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a test-time field, as in `evaluate`")
    pla = commands.add_parser("placebo", help="`confirm` of VGF with the transport in random directions")
    pla.add_argument("results_dir", type=Path)
    pla.add_argument("--episodes", type=int, default=100)
    pla.add_argument("--seed", type=int, default=1000, help="base reset seed, as in `confirm`")
    pla.add_argument("--steps", type=lambda text: [int(x) for x in text.split(",")], default=[],
                     help="kept checkpoints to evaluate (default: each run's last)")
    pla.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a test-time field, as in `evaluate`")
    rep = commands.add_parser("report", help="tables and figures from the run directories")
    rep.add_argument("results_dir", type=Path)
    rep.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        return evaluate(args.results_dir, args.overrides)
    if args.command == "placebo":
        return placebo(args.results_dir, args.episodes, args.seed, args.steps, args.overrides)
    if args.command == "probe":
        return probe(args.results_dir, args.states, args.overrides)
    if args.command == "confirm":
        return confirm(args.results_dir, args.episodes, args.seed, args.steps, args.overrides)
    return report(args.results_dir, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
