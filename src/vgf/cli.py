"""The `vgf` command line: argument parsing, progress bars and tables on top of the library."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

PIPED_WIDTH = 240  # columns of output to a file or pipe (a log) when COLUMNS is unset; rich's default, 80, cuts tables


def make_console(**options) -> Console:
    """A rich console as wide as its terminal, or, writing to a file or pipe, COLUMNS (else PIPED_WIDTH) columns wide."""
    made = Console(**options)
    if not made.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        made.width = PIPED_WIDTH
    return made


console = make_console()
err_console = make_console(stderr=True, soft_wrap=True)  # messages stay whole lines, for people and scripts


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


BOOLEAN_WORDS = {"true": True, "false": False}  # as a shell user writes them; True/False parse as literals


def override(text: str) -> tuple[str, object]:
    """`key=value` with a Python literal value (numbers, tuples, strings, True/False or true/false)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if raw.strip().lower() in BOOLEAN_WORDS:
        return key.strip(), BOOLEAN_WORDS[raw.strip().lower()]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def logger_list(text: str) -> tuple[str, ...]:
    from vgf.training.tracking import TrackerError, parse_loggers

    try:
        return parse_loggers(text)
    except TrackerError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_logger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--logger", type=logger_list, metavar="NAMES",
        help="where metric rows go besides the run directory's metrics.jsonl/csv (csv, always on): tensorboard, wandb, "
             "or both (tensorboard,wandb); needs the [track] extra. W&B without network: WANDB_MODE=offline",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgf", description="Behavior-regularized RL by Value Gradient Flow.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="make or check offline datasets").add_subparsers(dest="data_command", required=True)
    make = data.add_parser("make", help="generate a dataset locally: OGBench play (scripted oracles) or D4RL-protocol "
                           "locomotion (<env>-<dataset>-v5, a SAC teacher)")
    make.add_argument("dataset", help="e.g. cube-single-play, puzzle-3x3-play, hopper-medium-v5, walker2d-medium-replay-v5")
    make.add_argument("--episodes", type=int, default=1000, help="OGBench: training episodes (plus 10%% for the -val file)")
    make.add_argument("--max-episode-steps", type=int, default=1001, help="OGBench: steps per episode")
    make.add_argument("--transitions", type=int, default=1_000_000, help="locomotion: samples per collected dataset (D4RL: 1M)")
    make.add_argument("--teacher-dir", help="locomotion: where SAC teacher runs live and resume (default: <out>/teachers)")
    make.add_argument("--teacher-steps", type=int, default=1_000_000, help="locomotion: the teacher's step budget (the expert's)")
    make.add_argument("--medium-return", type=float, help="locomotion: the medium threshold (default: 1/3 of D4RL's expert return)")
    make.add_argument("--out", default="data", help="output directory")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--workers", type=int, help="processes collecting episodes (default: one per core; the file is the same)")
    check = data.add_parser("check", help="validate a dataset file (.npz or D4RL .hdf5); non-zero exit with the reason")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true", help="refuse actions outside the action box (default: count them and warn)")

    tr = commands.add_parser("train", help="train an agent offline (then online with --online-steps)")
    tr.add_argument("agent", nargs="?", help="vgf, avgf, bc, iql, rebrac, fql or rejection")
    tr.add_argument("--task", help="e.g. cube-single-play-singletask-task1, or bandit")
    tr.add_argument("--preset", default="cpu-small")
    tr.add_argument("--steps", type=int, help="updates in all (default 10000; with --resume: the run's own)")
    tr.add_argument("--eval-every", type=int, default=5_000)
    tr.add_argument("--log-every", type=int, default=500)
    seeds = tr.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=int_list, help="several seeds in one process (vmapped), e.g. 0,1,2,3; each its own run directory")
    tr.add_argument("--data-dir", default="data")
    tr.add_argument("--run-dir", help="default: runs/<agent>-<task>-s<seed>; with --seeds, the parent of one s<seed> directory per seed")
    tr.add_argument("--eval-budgets", type=int_list, default=(0, 1, 2, 4))
    tr.add_argument("--eval-episodes", type=int, default=10)
    tr.add_argument("--eval-workers", type=int, help="subprocesses stepping evaluation envs (default: one per core)")
    tr.add_argument("--strict", action="store_true", help="refuse dataset actions outside the action box (default: clip with a warning)")
    tr.add_argument("--keep-checkpoints", type=int, default=3, help="the newest K checkpoints are kept")
    tr.add_argument("--checkpoint-every", type=int, help="updates between checkpoints (default: --eval-every)")
    tr.add_argument("--keep-every", type=int, help="also keep every checkpoint whose step is a multiple of N (e.g. the evaluation steps)")
    tr.add_argument("--set", dest="overrides", type=override, action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. --set vgf_alpha=0.2")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint (so does an existing --run-dir)")
    tr.add_argument("--online-steps", type=int, help="env steps of online training after the offline updates (default 0; with --resume: the run's own)")
    tr.add_argument("--replay", default="rlpd", help="online batches: dataset (dataset + online data as one buffer), rlpd (half each) or online (online data only)")
    tr.add_argument("--online-envs", type=int, default=1, help="environments stepped together in the online phase")
    tr.add_argument("--updates-per-env-step", type=int, default=1, help="updates after each online env step (per environment)")
    tr.add_argument("--explore-vgf-steps", type=int, default=0, help="transport budget when acting online (0: best of N particles by Q, the paper's setting)")
    tr.add_argument("--normalize-rewards", action=argparse.BooleanOptionalAction, help="scale dataset and online rewards so dataset "
                    "episode returns span 1000 (default: as the agent's reference does: VGF and IQL on D4RL locomotion)")
    add_logger_argument(tr)

    ev = commands.add_parser("eval", help="evaluate a trained run at several transport budgets")
    ev.add_argument("run_dir")
    ev.add_argument("--vgf-steps", type=int_list, default=(0, 1, 2, 4), help="transport budgets, e.g. 0,1,2,4")
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--workers", type=int, help="subprocesses stepping the envs (default: one per core)")
    ev.add_argument("--step", type=int, help="the kept checkpoint of this step (default: the newest)")
    ev.add_argument("--set", dest="overrides", type=override, action="append", default=[], metavar="KEY=VALUE", help="act with a test-time config field changed, e.g. --set vgf_lr=0.01 (transport step size)")

    demo = commands.add_parser("demo", help="the main job end to end on embedded defaults (about 6-8 minutes on 2 cores)")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="a smoke version (about 3 minutes): tiny data, few updates")
    demo.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser("bench", help="train agents x tasks x seeds (in parallel, resumable) and write a score table")
    bench.add_argument("--agents", type=name_list, help="e.g. vgf,bc")
    bench.add_argument("--tasks", type=name_list, help="e.g. bandit,cube-single-play-singletask-task1")
    bench.add_argument("--seeds", type=int_list, default=(0, 1, 2))
    bench.add_argument("--steps", type=int, default=10_000)
    bench.add_argument("--preset", default="cpu-small")
    bench.add_argument("--eval-every", type=int, help="default: steps/10")
    bench.add_argument("--eval-episodes", type=int, default=10)
    bench.add_argument("--eval-budgets", type=int_list, default=(0, 1, 2, 4), help="plus each agent's default budget")
    bench.add_argument("--data-dir", default="data")
    bench.add_argument("--set", dest="overrides", type=override, action="append", default=[], metavar="KEY=VALUE", help="override a config field of every agent that has it")
    bench.add_argument("--results-dir", default="runs/bench")
    bench.add_argument("--cpus-per-run", type=float, default=1.0)
    bench.add_argument("--gpus-per-run", type=float, default=0.0)
    bench.add_argument("--retries", type=int, default=1, help="times a failed run is tried again")
    bench.add_argument("--keep-checkpoints", type=int, default=3, help="the newest K checkpoints of each run are kept")
    bench.add_argument("--checkpoint-every", type=int, help="updates between checkpoints (default: --eval-every)")
    bench.add_argument("--keep-every", type=int, help="also keep every checkpoint whose step is a multiple of N (e.g. the evaluation steps)")
    add_logger_argument(bench)
    add_cluster_arguments(bench)

    sweep = commands.add_parser("sweep", help="run a grid of runs from a YAML file on Ray (a local instance or a cluster)")
    sweep.add_argument("file", nargs="?", help="sweep YAML file (format: README, 'Benchmarks and sweeps')")
    sweep.add_argument("--results-dir", help="default: the file's results_dir")
    add_logger_argument(sweep)
    add_cluster_arguments(sweep)

    from vgf.llm.cli import add_llm_commands  # argparse only: PyTorch loads when an llm command runs

    add_llm_commands(commands)
    return parser


def name_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="an existing Ray cluster: auto, or ray://HOST:PORT (default: a local instance)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and plots from the results directory")
    parser.add_argument("--pack", metavar="DIR", help="only copy each run's record and newest checkpoint into DIR, to go on "
                        "elsewhere: copy DIR back as the results directory and run the same command")


def cmd_data(args) -> int:
    from vgf.data import check_file, generate_ogbench_dataset
    from vgf.data.locomotion import generate_locomotion_dataset, is_locomotion_name

    if args.data_command == "make" and is_locomotion_name(args.dataset):
        began = time.perf_counter()
        path = generate_locomotion_dataset(
            args.dataset, args.out, transitions=args.transitions, seed=args.seed, workers=args.workers,
            teacher_dir=args.teacher_dir, teacher_budget=args.teacher_steps, medium_return=args.medium_return,
        )
        console.print(f"wrote {path} in {time.perf_counter() - began:.0f} s")
        return 0
    if args.data_command == "make":
        if args.episodes <= 0:
            raise ValueError(f"--episodes must be > 0, got {args.episodes}")
        began = time.perf_counter()
        train_path, val_path = generate_ogbench_dataset(
            args.dataset, args.out, episodes=args.episodes, max_episode_steps=args.max_episode_steps, seed=args.seed,
            workers=args.workers,
        )
        console.print(f"wrote {train_path} and {val_path} in {time.perf_counter() - began:.0f} s")
        return 0
    summary = check_file(args.file, strict=args.strict)
    table = Table(title=f"{args.file}: OK")
    table.add_column("field")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(str(key), str(value))
    console.print(table)
    return 0


def training_progress(run_dir: str, total: int):
    """A progress bar, and the `on_start` and `progress` callbacks of `train` that drive it."""
    progress = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("train", total=total, status="")

    def start(step: int) -> None:
        if step:
            progress.console.print(f"resuming {run_dir} from step {step}")
        progress.update(task, completed=step)

    def update(step: int, _total: int, row: dict) -> None:
        seeds = int(row.get("seeds_together", 1))
        status = f"{row['updates_per_s']:.1f} upd/s" + (f" x {seeds} seeds (mean over seeds)" if seeds > 1 else "")
        for metric, label in (("success", "success"), ("normalized_score", "score")):
            evals = {k.split("/")[1]: v for k, v in row.items() if k.startswith("eval/") and k.endswith(f"/{metric}")}
            if evals:
                status += f" | {label} " + " ".join(f"{b.split('_')[1]}:{v:.2f}" for b, v in evals.items())
        if "online/success" in row:  # the exploration episodes of the online phase
            status += f" | online episodes success {row['online/success']:.2f}"
        progress.update(task, completed=step, status=status)

    return progress, start, update


def cmd_train(args) -> int:
    from vgf.training import TrainSettings, devices_line
    from vgf.training.offline import check_seed_group, train_seeds
    from vgf.training.run import resumed_settings, seed_group

    if args.resume:
        group = [resumed_settings(Path(args.resume), steps=args.steps, online_steps=args.online_steps, loggers=args.logger)]
    else:
        if not args.agent or not args.task:
            raise ValueError("vgf train needs an AGENT and --task (or --resume RUN_DIR)")
        settings = TrainSettings(
            agent=args.agent,
            task=args.task,
            run_dir="",
            preset=args.preset,
            steps=10_000 if args.steps is None else args.steps,
            eval_every=args.eval_every,
            log_every=args.log_every,
            seed=args.seed,
            data_dir=args.data_dir,
            eval_budgets=args.eval_budgets,
            eval_episodes=args.eval_episodes,
            eval_workers=args.eval_workers,
            keep_checkpoints=args.keep_checkpoints,
            checkpoint_every=args.checkpoint_every,
            keep_every=args.keep_every,
            strict=args.strict,
            overrides=dict(args.overrides),
            online_steps=args.online_steps or 0,
            replay=args.replay,
            online_envs=args.online_envs,
            updates_per_env_step=args.updates_per_env_step,
            explore_vgf_steps=args.explore_vgf_steps,
            normalize_rewards=args.normalize_rewards,
            loggers=args.logger or ("csv",),
        )
        group = seed_group(settings, args.seeds, args.run_dir)
    check_seed_group(group)  # refused before the progress display starts
    console.print(devices_line(), markup=False, highlight=False)
    settings = group[0]
    progress, start, update = training_progress(", ".join(member.run_dir for member in group), settings.total_steps)
    with progress:
        finals = train_seeds(group, progress=update, on_start=start)
    for member, final in zip(group, finals):
        online = f" and {member.online_steps} online env steps" if member.online_steps else ""
        console.print(budget_table_from_row(final, f"{member.agent} on {member.task}, seed {member.seed}, after {member.steps} updates{online}"))
        console.print(f"run directory: {member.run_dir}")
    return 0


def budget_table_from_row(row: dict, title: str) -> Table:
    budgets = sorted({int(key.split("/")[1].split("_")[1]) for key in row if key.startswith("eval/budget_")})
    names = ("success", "return", "normalized_score", "displacement")
    results = {b: {name: row[f"eval/budget_{b}/{name}"] for name in names if f"eval/budget_{b}/{name}" in row} for b in budgets}
    return budget_table(results, title)


def budget_table(results: dict, title: str) -> Table:
    """One row per budget; the success and D4RL normalised score columns only where the results have them."""
    table = Table(title=title)
    columns = [("success", "success rate", "{:.3f}"), ("return", "return", "{:.2f}"),
               ("normalized_score", "D4RL normalized score", "{:.1f}")]
    columns = [column for column in columns if any(column[0] in stats for stats in results.values())]
    for header in ("budget (steps)", *(header for _, header, _ in columns), "mean distance from reference sample"):
        table.add_column(header, justify="right")
    for budget, stats in sorted(results.items()):
        table.add_row(
            str(budget),
            *(form.format(stats[name]) if name in stats else "-" for name, _, form in columns),
            f"{stats.get('displacement') or 0.0:.3f}",
        )
    return table


def cmd_eval(args) -> int:
    from vgf.agents import get_agent, with_test_time_settings
    from vgf.envs import make_env, task_spec
    from vgf.evaluation import EnvPool, env_workers, plot_budget_curve
    from vgf.files import atomic_write_text
    from vgf.training import devices_line, eval_record, eval_record_name, evaluate_agent, load_run, settings_suffix

    if min(args.vgf_steps) < 0 or args.episodes <= 0:
        raise ValueError(f"--vgf-steps must be non-negative and --episodes positive, got {list(args.vgf_steps)} and {args.episodes}")
    settings, agent, step = load_run(Path(args.run_dir), args.step)
    if settings.task is None:
        raise ValueError(f"{args.run_dir} was trained on a dataset without a task (vgf.fit): it has no environment to be evaluated in")
    console.print(devices_line(), markup=False, highlight=False)
    agent = with_test_time_settings(settings.agent, agent, dict(args.overrides))
    changed = {name: getattr(agent.config, name) for name, _ in args.overrides}  # as applied: vgf_lr=0 reads 0.0
    budgets = args.vgf_steps if get_agent(settings.agent).USES_BUDGETS else (0,)
    began = time.perf_counter()
    workers = env_workers(args.workers, task_spec(settings.task).max_episode_steps)
    with EnvPool(functools.partial(make_env, settings.task), workers=workers) as pool:
        results = evaluate_agent(agent, settings.task, budgets, args.episodes, args.seed, pool, progress=True,
                                 per_episode=True)
    elapsed = time.perf_counter() - began
    out_dir = Path(args.run_dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = settings_suffix(changed)  # a changed setting never overwrites the default's plot
    record = eval_record(step, args.episodes, args.seed, elapsed, changed, results)
    out_file = out_dir / eval_record_name(step, args.seed, changed)
    atomic_write_text(out_file, json.dumps(record, indent=2))
    described = "".join(f", {name}={value}" for name, value in changed.items())
    plot = plot_budget_curve(results, Path(args.run_dir) / "plots" / f"budget_curve{suffix}.png", title=f"{settings.agent} on {settings.task}, step {step}{described}")
    console.print(budget_table(results, f"{settings.agent} on {settings.task}, checkpoint step {step}{described}, {args.episodes} episodes per budget"))
    console.print(f"{elapsed:.1f} s; wrote {out_file} and {plot}")
    return 0


def cmd_demo(args) -> int:
    from vgf.demo import DEMO_SIZES, run_demo

    began = time.perf_counter()
    size = DEMO_SIZES["quick" if args.quick else "full"]
    summary = run_demo(Path(args.out), size, args.seed, lambda text: console.print(f"[dim]{text}[/dim]"))
    bandit = summary["bandit"]
    table = Table(title="Part A: contextual bandit (known answer: best in-support action has reward 1.0)")
    for column in ("agent", "budget", "mean reward", "success (within 0.15 of best)", "distance to best", "displacement"):
        table.add_column(column, justify="right")
    for row in bandit["rows"]:
        table.add_row(row["agent"], str(row["budget"]), f"{row['reward']:.3f}", f"{row['success']:.2f}", f"{row['distance_to_best']:.3f}", f"{row['displacement']:.3f}")
    console.print(table)
    best_vgf = max((r for r in bandit["rows"] if r["agent"] == "vgf"), key=lambda r: r["reward"])
    bc = next(r for r in bandit["rows"] if r["agent"] == "bc")
    console.print(
        f"behavior policy mean reward {bandit['behavior_reward']:.3f}; BC {bc['reward']:.3f}; "
        f"VGF best budget {best_vgf['budget']}: {best_vgf['reward']:.3f} (distance to best action {best_vgf['distance_to_best']:.3f}). "
        f"Particle plot: {bandit['plot']}"
    )
    og = summary["ogbench"]
    console.print(budget_table(og["results"], f"Part B: VGF on cube-single task 1 after {og['steps']} CPU updates, {og['eval_episodes']} episodes per budget"))
    successes = [stats["success"] for stats in og["results"].values()]
    verdict = (
        "no budget solved the task: this part shows the pipeline (data generation, training, multi-budget evaluation), "
        "not a solved task; OGBench manipulation needs ~1M updates (hours on a GPU)."
        if max(successes) == 0
        else "some episodes succeeded, but a few hundred CPU updates are far from the ~1M the method is tuned for; treat these numbers as a smoke test, not a result."
    )
    console.print(f"[bold]Honest reading:[/bold] {verdict}")
    console.print(f"budget curve: {og['plot']}; learning curve: {Path(og['run_dir']) / 'plots' / 'learning_curve.png'}")
    console.print(f"demo finished in {time.perf_counter() - began:.0f} s; everything is under {args.out}")
    return 0


class SweepDisplay:
    """The live view of a grid of runs: one line per run state (its runs by name) and an overall bar."""

    STYLES = {"pending": "dim", "running": "cyan", "done": "green", "failed": "red"}

    def __init__(self, live_console: Console):
        self.console, self.statuses, self.states, self.began = live_console, [], {}, time.monotonic()

    def update(self, statuses) -> None:
        """The `on_change` callback of `run_grid`: also prints a line for each run that ends."""
        if not self.statuses:
            skipped = sum(status.skipped for status in statuses)
            if skipped:
                self.console.print(f"skipping {skipped} finished run(s)")
        for status in statuses:
            key = (status.state.value, status.attempts)
            previous, self.states[status.spec.name] = self.states.get(status.spec.name), key
            if previous is None or previous == key:
                continue
            if status.state.value == "done":
                self.console.print(f"{status.spec.name} [green]done[/green] in {status.seconds:.0f} s", highlight=False)
            elif status.state.value == "failed":
                self.console.print(f"{status.spec.name} [red]failed[/red] after {status.attempts} attempt(s): {escape(status.error or '')}", highlight=False)
            elif status.state.value == "pending" and status.attempts > 1:
                self.console.print(f"{status.spec.name} [yellow]retrying[/yellow] (attempt {status.attempts}) after: {escape(status.error or '')}", highlight=False)
        self.statuses = statuses

    def describe(self, status) -> str:
        if status.state.value == "running":
            retry = f", attempt {status.attempts}" if status.attempts > 1 else ""
            retry += f", resumed from step {status.resumed_from}" if status.resumed_from else ""
            return f"{status.spec.name} ({status.step}/{status.spec.steps}{retry})"
        return status.spec.name

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        lines = []
        for state, style in self.STYLES.items():
            members = [status for status in self.statuses if status.state.value == state]
            names = ", ".join(self.describe(status) for status in members[:6]) + (f", +{len(members) - 6} more" if len(members) > 6 else "")
            lines.append(Text.assemble((f"{state:<8}{len(members):>4}  ", style), names, overflow="ellipsis", no_wrap=True))
        total = len(self.statuses)
        finished = sum(status.state.value in ("done", "failed") for status in self.statuses)
        partial = sum(status.step / status.spec.steps for status in self.statuses if status.state.value == "running")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(total, 1), completed=finished + partial, width=40),
                    f"{finished}/{total} runs finished, {time.monotonic() - self.began:.0f} s")
        return Group(*lines, bar)


def score_tables(rows, title: str) -> list[Table]:
    """One table per task: success rate (D4RL: normalized score), mean ± std over seeds, at the last and the best
    evaluation."""
    from vgf.sweep.report import SCORE_LABELS

    tables = []
    with_settings = any(row.setting for row in rows)
    for task in sorted({row.task for row in rows}):
        score = " / ".join(sorted({SCORE_LABELS[row.metric] for row in rows if row.task == task}))
        table = Table(title=f"{title}: {task}", caption=f"{score}, mean ± std over seeds; headline: last evaluation",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("agent", *(["setting"] if with_settings else []), "budget", "seeds", "steps", "last", "best eval"):
            names = column in ("agent", "setting")
            table.add_column(column, justify="left" if names else "right", overflow="fold", no_wrap=not names)  # numbers whole
        for row in (row for row in rows if row.task == task):
            table.add_row(
                row.agent, *([escape(row.setting)] if with_settings else []), row.budget_label, str(row.seeds), str(row.steps),
                f"{row.score_last_mean:.2f} ± {row.score_last_std:.2f}", f"{row.score_best_mean:.2f} ± {row.score_best_std:.2f}",
            )
        tables.append(table)
    return tables


def report_results(results_dir: Path, title: str) -> int:
    """Write and print the report of `results_dir`; exit code 1 when some run failed or is unfinished."""
    from vgf.sweep import write_report

    report = write_report(results_dir, title)
    for table in score_tables(report.rows, title):
        console.print(table)
    for note in report.notes:
        console.print(f"[yellow]rows split:[/yellow] {escape(note)}", highlight=False)
    for note in report.data:
        console.print(f"[yellow]data differs:[/yellow] {escape(note)}", highlight=False)
    for problem in report.problems:
        console.print(f"[yellow]not in the table:[/yellow] {problem.name}: {escape(problem.reason)}", highlight=False)
    console.print("wrote " + ", ".join(str(path) for path in report.files))
    return 1 if report.problems else 0


def pack_results(results_dir: Path, out_dir: str) -> int:
    from vgf.sweep.pack import pack_results as pack

    packed = pack(results_dir, out_dir)
    for run in packed:
        where = "no checkpoint yet" if run.step is None else f"checkpoint at step {run.step:,}"
        console.print(f"packed {run.name}: {where}, {run.bytes / 2**20:.1f} MiB")
    console.print(f"{len(packed)} run(s) of {results_dir} packed into {out_dir}")
    return 0


def run_and_report(specs, results_dir: Path, resources, retries: int, args, title: str) -> int:
    """Train the runs on Ray with a live view, then write the report."""
    from rich.live import Live

    from vgf.sweep import run_grid

    console.print(f"{len(specs)} run(s) in {results_dir}" + (f" on the Ray cluster at {args.address}" if args.address else ""))
    display = SweepDisplay(console)
    # A live view in a terminal; in a log, the lines printed as runs end and the final state once.
    view = Live(display, console=console, refresh_per_second=4) if console.is_terminal else contextlib.nullcontext()
    try:
        with view:
            run_grid(specs, results_dir, resources, retries, args.address, args.num_cpus, on_change=display.update)
        if not console.is_terminal:
            console.print(display)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted; run the same command again to resume (finished runs are skipped)") from None
    return report_results(results_dir, title)


def cmd_bench(args) -> int:
    from vgf.sweep import Grid, GridError, Resources

    results_dir = Path(args.results_dir)
    title = f"vgf bench: {results_dir}"
    if args.report:
        return report_results(results_dir, title)
    if args.pack:
        return pack_results(results_dir, args.pack)
    if not args.agents or not args.tasks:
        raise ValueError("vgf bench needs --agents and --tasks (or --report)")
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    grid = Grid(
        agents=args.agents,
        tasks=args.tasks,
        seeds=args.seeds,
        steps=args.steps,
        preset=args.preset,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_budgets=args.eval_budgets,
        data_dir=args.data_dir,
        overrides=dict(args.overrides),
        loggers=args.logger or ("csv",),
        keep_checkpoints=args.keep_checkpoints,
        checkpoint_every=args.checkpoint_every,
        keep_every=args.keep_every,
    )
    flags = {"agents": "--agents", "tasks": "--tasks", "seeds": "--seeds", "steps": "--steps", "preset": "--preset", "set": "--set", "eval": "--eval-*", "resources": "--cpus-per-run/--gpus-per-run", "loggers": "--logger", "keep_checkpoints": "--keep-checkpoints", "checkpoint_every": "--checkpoint-every", "keep_every": "--keep-every"}
    try:
        specs = grid.runs()
        resources = Resources(args.cpus_per_run, args.gpus_per_run)
    except GridError as error:  # the message starts with the YAML key; name the flag instead
        key, _, rest = str(error).partition(": ")
        raise ValueError(f"{flags.get(key.split('.')[0], key)}: {rest}") from None
    return run_and_report(specs, results_dir, resources, args.retries, args, title)


def cmd_sweep(args) -> int:
    from vgf.sweep import load_sweep

    if args.file is None and not ((args.report or args.pack) and args.results_dir):
        raise ValueError("vgf sweep needs a sweep YAML file (or --report / --pack with --results-dir DIR)")
    sweep = load_sweep(args.file) if args.file else None
    results_dir = Path(args.results_dir) if args.results_dir else sweep.results_dir
    title = f"vgf sweep: {args.file or results_dir}"
    if args.report:
        return report_results(results_dir, title)
    if args.pack:
        return pack_results(results_dir, args.pack)
    grid = dataclasses.replace(sweep.grid, loggers=args.logger) if args.logger else sweep.grid
    return run_and_report(grid.runs(), results_dir, sweep.resources, sweep.retries, args, title)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = show_warning  # one line each (e.g. a damaged checkpoint skipped on resume), no source lines
    from vgf.llm.cli import cmd_llm

    handlers = {
        "data": cmd_data,
        "train": cmd_train,
        "eval": cmd_eval,
        "demo": cmd_demo,
        "bench": cmd_bench,
        "sweep": cmd_sweep,
        "llm": cmd_llm,
    }
    from vgf.data import DatasetError
    from vgf.files import WriteFailed
    from vgf.training import RunDirectoryInUse, TrainingDiverged, interrupted_by

    try:
        with interrupted_by(signal.SIGTERM):  # `kill` stops a command as Ctrl-C does: runs checkpoint their last logged step
            return handlers[args.command](args)
    except (ValueError, FileNotFoundError, DatasetError, TrainingDiverged, RunDirectoryInUse) as error:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False)
        return 3 if isinstance(error, TrainingDiverged) else 2
    except WriteFailed as error:  # a full disk: nothing written before is lost, and the same command resumes
        err_console.print(f"[bold red]error:[/bold red] {escape(str(error))}. Free some space, then run the same "
                          "command again: it resumes from the last checkpoint", highlight=False)
        return 4
    except KeyboardInterrupt as interrupted:  # a TrainingInterrupted says where the checkpoint is and how to resume
        err_console.print(str(interrupted) or "interrupted", markup=False, highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
