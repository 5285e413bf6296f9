#!/usr/bin/env python
"""Parity harness: the authors' reference VGF (github.com/ryanxhr/vgf) against ours on one OGBench task.

Both sides train on the same local dataset files with the same hyperparameters (our `cpu-small` preset), evaluate
every `--eval-every` updates at transport budgets 0..3, and are reported side by side in `<out>/parity.md`.

- Reference side: the user's own checkout of the reference (`--reference`), run with its own interpreter
  (`--reference-python`), one subprocess per seed, each in `<reference-workdir>/<task>/seed<N>`. Nothing of the
  reference is copied here: its `main.py` is run as it is, configured by command-line flags only.
- Our side: `vgf train vgf ... --seeds ...` (resumable on its own).
- Records: one JSON file per side and seed under `<out>/<task>/`; `--report-only` rebuilds `parity.md` from them.

See benchmarks/parity/README.md. Standard library and numpy only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIDES = ("reference", "ours")
SIDE_TITLES = {"reference": "ref", "ours": "ours"}

# The reference evaluates VGF at these transport budgets (a list fixed in its main.py; `evaluate_vgf_multiple`).
REFERENCE_BUDGETS = (0, 1, 2, 3)

# Our `cpu-small` VGF preset in the reference's `--agent.*` flags (agents/vgf.py `get_config`). Their ensemble is
# always 2 critics and their critic MLP applies LayerNorm before the activation, as our defaults do.
REFERENCE_AGENT_FLAGS = {
    "value_hidden_dims": "(256, 256, 256)",
    "actor_hidden_dims": "(256, 256, 256)",
    "layer_norm": "True",
    "actor_layer_norm": "False",
    "activations": "relu",
    "batch_size": "256",
    "value_lr": "0.0003",
    "actor_lr": "0.0003",
    "discount": "0.99",
    "tau": "0.005",
    "critic_loss": "td",
    "bc_policy_type": "flow",
    "bc_flow_steps": "5",
    "vgf_particles": "8",
    "train_vgf_steps": "2",
    "vgf_lr": "0.05",
    "vgf_alpha": "0.5",
    "vgf_q_agg": "mean",  # transport score
    "train_q_agg": "mean",  # TD target and the pick of the played particle
    "train_particle_select": "mean",
    "eval_particle_select": "max",
}

# (our config field, reference agent field, how to compare): checked in the report once both configs are recorded.
CONFIG_PAIRS = [
    ("hidden_dims", "value_hidden_dims", None),
    ("hidden_dims", "actor_hidden_dims", None),
    ("critic_layer_norm", "layer_norm", None),
    ("actor_layer_norm", "actor_layer_norm", None),
    ("learning_rate", "value_lr", None),
    ("learning_rate", "actor_lr", None),
    ("batch_size", "batch_size", None),
    ("discount", "discount", None),
    ("tau", "tau", None),
    ("critic_loss", "critic_loss", {"mse": "td"}),
    ("bc_flow_steps", "bc_flow_steps", None),
    ("num_particles", "vgf_particles", None),
    ("train_vgf_steps", "train_vgf_steps", None),
    ("vgf_lr", "vgf_lr", None),
    ("vgf_alpha", "vgf_alpha", None),
    ("transport_q_agg", "vgf_q_agg", None),
    ("target_q_agg", "train_q_agg", None),
    ("select_q_agg", "train_q_agg", None),
    ("train_particle_select", "train_particle_select", None),
    ("eval_particle_select", "eval_particle_select", None),
]

# Stand-ins the reference needs on an OGBench-only machine. Its envs/env_utils.py imports d4rl and gym at the top
# and asks gym's registry for the D4RL env ids; neither package is installable next to today's numpy/gymnasium and
# neither is used on the OGBench path. Written to `<reference-workdir>/stubs` (outside this repo), put on PYTHONPATH.
STUBS = {
    "d4rl/__init__.py": '''"""Stand-in for d4rl (parity harness): the reference imports it unconditionally; OGBench runs never use it."""
def __getattr__(name):
    raise RuntimeError(f"d4rl stub: d4rl.{name} was used; this environment runs OGBench tasks only")
''',
    "gym/__init__.py": '''"""Stand-in for gym (parity harness): the reference only asks gym's registry for D4RL env ids; none are registered."""
class _Registry:
    def all(self):
        return []
class _Envs:
    registry = _Registry()
envs = _Envs()
def __getattr__(name):
    raise RuntimeError(f"gym stub: gym.{name} was used; this environment runs OGBench tasks only")
''',
}

# The reference's offline-mode wandb: its setup_wandb hard-codes mode='online'; WANDB_DISABLED turns that into an
# offline run (no network), written under the temporary directory.
REFERENCE_ENV = {
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_SILENT": "true",
}

RUNNING_GRACE_S = 300  # a reference run dir whose log changed this recently is taken to be still running


# ----------------------------------------------------------------------------------------------------------------
# Settings and names
# ----------------------------------------------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def dataset_name(task: str) -> str:
    """OGBench dataset of a single-task name: cube-single-play-singletask-task1 -> cube-single-play-v0."""
    match = re.fullmatch(r"(.+)-singletask(?:-task\d+)?(?:-v\d+)?", task)
    if match is None:
        raise SystemExit(f"--task {task!r} is not an OGBench single-task name (like cube-single-play-singletask-task1)")
    return f"{match.group(1)}-v0"


def reference_env_name(task: str) -> str:
    return f"ogbench:{task}" if re.search(r"-v\d+$", task) else f"ogbench:{task}-v0"


def run_settings(args) -> dict:
    """What a record must agree on to be reused."""
    return {
        "task": args.task,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "episodes": args.episodes,
        "budgets": list(args.budgets),
        "preset": args.preset,
    }


def record_head(args, side: str, seed: int, complete: bool) -> dict:
    """The fields every record starts with, on either side."""
    return {"side": side, "task": args.task, "seed": seed, "complete": complete, "settings": run_settings(args)}


def record_path(out: Path, task: str, side: str, seed: int) -> Path:
    return out / task / f"{side}-s{seed}.json"


def load_record(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def check_record_settings(record: dict, settings: dict, path: Path) -> None:
    if record.get("settings") != settings:
        raise SystemExit(
            f"{path} was recorded with other settings ({record.get('settings')}), not {settings}; "
            f"pass another --out or delete it"
        )


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------------------------
# Reference side
# ----------------------------------------------------------------------------------------------------------------


def check_reference_checkout(reference: Path | None) -> Path:
    if reference is None:
        raise SystemExit("--reference PATH is required: a local checkout of github.com/ryanxhr/vgf")
    reference = reference.resolve()
    missing = [name for name in ("main.py", "agents/vgf.py", "utils/evaluation.py") if not (reference / name).is_file()]
    if missing:
        raise SystemExit(
            f"--reference {reference} is not a checkout of ryanxhr/vgf (missing {', '.join(missing)}); clone it "
            f"outside this repository and pass its path"
        )
    return reference


def prepare_reference_workdir(workdir: Path, data_dir: Path, task: str) -> dict[str, str]:
    """Stubs, a private HOME whose ~/.ogbench/data links to our dataset files, and the subprocess environment."""
    name = dataset_name(task)
    files = [data_dir / f"{name}.npz", data_dir / f"{name}-val.npz"]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise SystemExit(
            f"dataset files missing: {', '.join(missing)}. Make them with `vgf data make {name[:-3]} --out {data_dir}` "
            f"(the reference must read exactly these and never download)"
        )
    for relative, text in STUBS.items():
        path = workdir / "stubs" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ogbench_dir = workdir / "home" / ".ogbench" / "data"
    ogbench_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        link = ogbench_dir / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(REFERENCE_ENV)
    env["HOME"] = str(workdir / "home")  # ogbench reads ~/.ogbench/data
    env["PYTHONPATH"] = str(workdir / "stubs")
    env["TMPDIR"] = str(workdir / "tmp")  # the offline wandb run directory
    return env


def check_reference_python(python: str, env: dict[str, str], reference: Path) -> None:
    probe = "import jax, flax, optax, distrax, ml_collections, ogbench, wandb, absl, tqdm, d4rl, gym"
    result = subprocess.run([python, "-c", probe], env=env, cwd=reference, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"--reference-python {python} cannot run the reference:\n{result.stderr.strip()[-2000:]}")


def reference_command(python: str, args, seed: int, save_dir: Path) -> list[str]:
    command = [
        python,
        "main.py",
        f"--env_name={reference_env_name(args.task)}",
        f"--seed={seed}",
        f"--offline_steps={args.steps}",
        f"--eval_interval={args.eval_every}",
        f"--log_interval={args.reference_log_every}",
        f"--eval_episodes={args.episodes}",
        "--video_episodes=0",
        f"--save_dir={save_dir}",
        "--project_name=parity",
        f"--run_group={args.task}",
        "--agent=agents/vgf.py",
    ]
    command += [f"--agent.{name}={value}" for name, value in REFERENCE_AGENT_FLAGS.items()]
    return command


def reference_run_dir(save_dir: Path) -> Path | None:
    """The newest run directory main.py made under save_dir (<project>/<group>/sd<seed>_<time>/)."""
    found = sorted(save_dir.glob("*/*/sd*/eval.csv"), key=lambda path: path.stat().st_mtime)
    return found[-1].parent if found else None


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def as_float(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def reference_finished(run_dir: Path | None, steps: int) -> bool:
    """Whether main.py got to its final evaluation (steps is a multiple of the evaluation interval)."""
    if run_dir is None:
        return False
    return any(as_float(row.get("step")) == steps for row in read_csv_rows(run_dir / "eval.csv"))


def reference_updates_per_s(train_rows: list[dict], eval_every: int, log_every: int) -> dict:
    """Training speed from train.csv with the evaluations left out.

    main.py logs `time/epoch_time` (seconds per update since the previous log) every `log_every` updates and
    evaluates at update 1 and every `eval_every` updates, right after that step's log. The interval that ends at
    log step s therefore holds an evaluation when one falls on an update in [s - log_every, s); those intervals
    (and with them the first, which also holds the compilation) are dropped.
    """
    clean, all_seconds, last_total = [], 0.0, None
    for row in train_rows:
        step, per_update = as_float(row.get("step")), as_float(row.get("time/epoch_time"))
        if step is None or per_update is None:
            continue
        seconds = per_update * log_every
        all_seconds += seconds
        last_total = as_float(row.get("time/total_time"))
        start = step - log_every
        evals = [e for e in range(int(start), int(step)) if e == 1 or (e > 0 and e % eval_every == 0)]
        if not evals:
            clean.append(seconds)
    return {
        "updates_per_s": (len(clean) * log_every / sum(clean)) if clean else None,
        "timed_intervals": len(clean),
        "interval_updates": log_every,
        "wall_s_to_last_log": last_total,
        "note": "training only: log intervals holding an evaluation (and the first, with compilation) left out",
    }


def collect_reference(args, seed: int, save_dir: Path, command: list[str]) -> dict:
    run_dir = reference_run_dir(save_dir)
    complete = reference_finished(run_dir, args.steps)
    if run_dir is None or not (complete or args.collect_only):
        raise SystemExit(f"reference seed {seed}: no finished run under {save_dir} (see {save_dir / 'log.txt'})")
    evaluations = []
    for row in read_csv_rows(run_dir / "eval.csv"):
        step = as_float(row.get("step"))
        success = {b: as_float(row.get(f"evaluation_{b}/success")) for b in args.budgets}
        returns = {b: as_float(row.get(f"evaluation_{b}/episode.return")) for b in args.budgets}
        evaluations.append({
            "step": int(step),
            "success": {str(b): v for b, v in success.items() if v is not None},
            "return": {str(b): v for b, v in returns.items() if v is not None},
        })
    flags = json.loads((run_dir / "flags.json").read_text())
    return {
        **record_head(args, "reference", seed, complete),
        "config": flags.get("agent", {}),
        "flags": flags,
        "command": shlex.join(command),
        "source": str(run_dir),
        "evaluations": evaluations,
        "timing": reference_updates_per_s(read_csv_rows(run_dir / "train.csv"), args.eval_every, args.reference_log_every),
        "recorded": utc_now(),
    }


def run_reference_side(args) -> None:
    reference = check_reference_checkout(args.reference)
    python = args.reference_python
    if python is None:
        raise SystemExit("--reference-python PATH is required: the interpreter of the reference's environment")
    missing_budgets = sorted(set(args.budgets) - set(REFERENCE_BUDGETS))
    if missing_budgets:
        print(f"note: the reference evaluates budgets {list(REFERENCE_BUDGETS)} only; {missing_budgets} will be n/a")
    workdir = (args.reference_workdir or reference.parent / "parity-runs").resolve()
    env = prepare_reference_workdir(workdir, args.data_dir.resolve(), args.task)
    check_reference_python(python, env, reference)
    settings = run_settings(args)
    for seed in args.seeds:
        path = record_path(args.out, args.task, "reference", seed)
        record = load_record(path)
        if record is not None:
            check_record_settings(record, settings, path)
            if record.get("complete", True):
                print(f"reference seed {seed}: recorded ({path}); skipped")
                continue
        save_dir = workdir / args.task / f"seed{seed}"
        command = reference_command(python, args, seed, save_dir)
        if args.collect_only:
            if reference_run_dir(save_dir) is None:
                print(f"reference seed {seed}: nothing under {save_dir} yet")
                continue
        elif not reference_finished(reference_run_dir(save_dir), args.steps):
            log = save_dir / "log.txt"
            if log.exists() and time.time() - log.stat().st_mtime < RUNNING_GRACE_S:
                raise SystemExit(f"reference seed {seed}: {log} changed in the last {RUNNING_GRACE_S} s; is it running?")
            if save_dir.exists():  # an unfinished run: the reference cannot resume, so it starts over
                aside = save_dir.with_name(f"{save_dir.name}.unfinished-{int(time.time())}")
                save_dir.rename(aside)
                print(f"reference seed {seed}: unfinished run moved to {aside}")
            save_dir.mkdir(parents=True)
            print(f"reference seed {seed}: running (log: {log})\n  {shlex.join(command)}", flush=True)
            with log.open("w") as handle:
                code = subprocess.run(command, cwd=reference, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
            if code != 0:
                raise SystemExit(f"reference seed {seed} failed with exit code {code}; see {log}")
        write_json(path, collect_reference(args, seed, save_dir, command))
        print(f"reference seed {seed}: recorded {path}")


# ----------------------------------------------------------------------------------------------------------------
# Our side
# ----------------------------------------------------------------------------------------------------------------


def our_command(args, seeds: tuple[int, ...], run_dir: Path) -> list[str]:
    return [
        *shlex.split(args.vgf),
        "train",
        "vgf",
        "--task", args.task,
        "--preset", args.preset,
        "--steps", str(args.steps),
        "--eval-every", str(args.eval_every),
        "--eval-episodes", str(args.episodes),
        "--eval-budgets", ",".join(map(str, args.budgets)),
        "--seeds", ",".join(map(str, seeds)),
        "--data-dir", str(args.data_dir),
        "--run-dir", str(run_dir),
    ]


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return rows


def our_finished(seed_dir: Path, steps: int) -> bool:
    return any(row.get("step") == steps and any(k.startswith("eval/") for k in row)
               for row in read_jsonl(seed_dir / "metrics.jsonl"))


def our_updates_per_s(rows: list[dict]) -> dict:
    """Training speed from metrics.jsonl: each row's `updates_per_s` times its chunk alone (no evaluation); the first
    chunk, which holds the compilation, is left out."""
    chunks, previous = [], 0
    for row in rows:
        if row.get("phase", "offline") != "offline":
            continue
        step, speed = row.get("step"), row.get("updates_per_s")
        if isinstance(step, (int, float)) and isinstance(speed, (int, float)) and speed > 0:
            chunks.append((step - previous, (step - previous) / speed))
            previous = step
    timed = chunks[1:]
    updates, seconds = sum(u for u, _ in timed), sum(s for _, s in timed)
    together = [row.get("seeds_together") for row in rows if row.get("seeds_together")]
    return {
        "updates_per_s": updates / seconds if seconds else None,
        "timed_intervals": len(timed),
        "seeds_together": max(together) if together else 1,
        "train_s": sum(s for _, s in chunks),
        "note": "training only (evaluation not timed); the first chunk, with compilation, left out; with several "
                "seeds vmapped in one process this is each seed's rate",
    }


def collect_ours(args, seed: int, seed_dir: Path, command: list[str]) -> dict:
    complete = our_finished(seed_dir, args.steps)
    if not (complete or (args.collect_only and (seed_dir / "metrics.jsonl").exists())):
        raise SystemExit(f"our seed {seed}: no finished run in {seed_dir}")
    rows = read_jsonl(seed_dir / "metrics.jsonl")
    evaluations = []
    for row in rows:
        success = {str(b): row[f"eval/budget_{b}/success"] for b in args.budgets if f"eval/budget_{b}/success" in row}
        if success:
            returns = {str(b): row[f"eval/budget_{b}/return"] for b in args.budgets if f"eval/budget_{b}/return" in row}
            evaluations.append({"step": int(row["step"]), "success": success, "return": returns})
    info = json.loads((seed_dir / "config.json").read_text())
    return {
        **record_head(args, "ours", seed, complete),
        "config": info.get("agent_config", {}),
        "run_info": {key: info.get(key) for key in ("settings", "dataset", "git_revision", "vgf_version", "jax_version")},
        "command": shlex.join(command),
        "source": str(seed_dir),
        "evaluations": evaluations,
        "timing": our_updates_per_s(rows),
        "recorded": utc_now(),
    }


def run_our_side(args) -> None:
    settings = run_settings(args)
    run_dir = (args.ours_run_dir or Path("runs") / "parity" / args.task).resolve()
    todo = []
    for seed in args.seeds:
        path = record_path(args.out, args.task, "ours", seed)
        record = load_record(path)
        if record is not None and record.get("complete", True):
            check_record_settings(record, settings, path)
            print(f"our seed {seed}: recorded ({path}); skipped")
        else:
            todo.append(seed)
    if not todo:
        return
    if args.collect_only:
        for seed in todo:
            seed_dir = run_dir / f"s{seed}"
            if (seed_dir / "metrics.jsonl").exists():
                path = record_path(args.out, args.task, "ours", seed)
                # Started by other means (vgf bench, vgf train): the record's run_info holds the run's own settings.
                write_json(path, collect_ours(args, seed, seed_dir, ["collected", "from", str(seed_dir)]))
                print(f"our seed {seed}: recorded {path}")
            else:
                print(f"our seed {seed}: nothing in {seed_dir} yet")
        return
    groups = [tuple(todo)] if args.ours_together else [(seed,) for seed in todo]
    for seeds in groups:
        command = our_command(args, seeds, run_dir)
        if not all(our_finished(run_dir / f"s{seed}", args.steps) for seed in seeds):
            print(f"our seeds {','.join(map(str, seeds))}: running\n  {shlex.join(command)}", flush=True)
            code = subprocess.run(command).returncode
            if code != 0:
                raise SystemExit(f"our side failed with exit code {code}: {shlex.join(command)}")
        for seed in seeds:
            path = record_path(args.out, args.task, "ours", seed)
            write_json(path, collect_ours(args, seed, run_dir / f"s{seed}", command))
            print(f"our seed {seed}: recorded {path}")


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def load_records(out: Path) -> list[dict]:
    paths = sorted(path for side in SIDES for path in out.glob(f"*/{side}-s*.json"))
    return [json.loads(path.read_text()) for path in paths]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None with one value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if array.size > 1 else None)


def format_cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    spread = f" ± {std:.2f}" if std is not None else ""
    return f"{mean:.2f}{spread} ({', '.join(f'{v:.2f}' for v in values)})"


def success_at(records: list[dict], step: int, budget: str) -> list[float]:
    """Each seed's success at (step, budget), in seed order; seeds without that evaluation are left out."""
    values = []
    for record in sorted(records, key=lambda r: r["seed"]):
        for evaluation in record["evaluations"]:
            if evaluation["step"] == step and budget in evaluation["success"]:
                values.append(float(evaluation["success"][budget]))
    return values


def verdict(by_side: dict[str, list[dict]], steps: list[int], budgets: list[str]) -> tuple[str, list[str]]:
    """Per budget at the last step both sides evaluated: |mean_ref - mean_ours| <= sqrt(std_ref^2 + std_ours^2)."""
    common = [s for s in steps if all(any(success_at(by_side[side], s, b) for b in budgets) for side in SIDES)]
    if not common:
        return "no verdict: the two sides share no evaluation step", []
    # Unfinished runs stop at different steps: judge at the last step with 2 seeds a side, if there is one.
    seeded = [s for s in common if all(len(success_at(by_side[side], s, budgets[0])) >= 2 for side in SIDES)]
    step = (seeded or common)[-1]
    lines, fits, undecided = [], [], False
    for budget in budgets:
        ref, ours = success_at(by_side["reference"], step, budget), success_at(by_side["ours"], step, budget)
        if len(ref) < 2 or len(ours) < 2:
            lines.append(f"budget {budget}: needs at least 2 seeds per side (reference {len(ref)}, ours {len(ours)})")
            undecided = True
            continue
        (m_ref, s_ref), (m_ours, s_ours) = mean_std(ref), mean_std(ours)
        gap, band = abs(m_ref - m_ours), math.hypot(s_ref, s_ours)
        ok = gap <= band
        fits.append(ok)
        lines.append(f"budget {budget}: |{m_ref:.2f} - {m_ours:.2f}| = {gap:.2f} {'<=' if ok else '>'} "
                     f"combined std {band:.2f} -> {'within' if ok else 'outside'} seed spread")
    if undecided:
        head = f"no verdict at step {step}: too few seeds"
    elif all(fits):
        head = f"INDISTINGUISHABLE within seed spread at step {step} (every budget)"
    else:
        outside = [b for b, ok in zip(budgets, fits) if not ok]
        head = f"DIFFERENT at step {step}: budget(s) {', '.join(outside)} outside seed spread"
    return head, lines


def config_check(by_side: dict[str, list[dict]]) -> list[str]:
    if not by_side["reference"] or not by_side["ours"]:
        return []
    ref, ours = by_side["reference"][0]["config"], by_side["ours"][0]["config"]
    lines = []
    for our_key, ref_key, translate in CONFIG_PAIRS:
        if our_key not in ours or ref_key not in ref:
            lines.append(f"| {our_key} | {ours.get(our_key, 'absent')} | {ref_key} | {ref.get(ref_key, 'absent')} | ? |")
            continue
        ours_value, ref_value = ours[our_key], ref[ref_key]
        if translate:
            ours_value = translate.get(ours_value, ours_value)
        same = (list(ours_value) == list(ref_value)) if isinstance(ours_value, (list, tuple)) and isinstance(
            ref_value, (list, tuple)) else (ours_value == ref_value)
        lines.append(f"| {our_key} | {ours[our_key]} | {ref_key} | {ref_value} | {'yes' if same else '**NO**'} |")
    return ["| ours | value | reference | value | same |", "|---|---|---|---|---|", *lines]


def speed_cell(records: list[dict]) -> str:
    values = [r["timing"]["updates_per_s"] for r in sorted(records, key=lambda r: r["seed"])
              if r.get("timing", {}).get("updates_per_s")]
    if not values:
        return "—"
    mean, std = mean_std(values)
    spread = f" ± {std:.2f}" if std is not None else ""
    return f"{mean:.2f}{spread} ({', '.join(f'{v:.2f}' for v in values)})"


def seed_label(record: dict) -> str:
    """'0', or '1 (unfinished: last evaluation at 10000)' for a run collected before it ended."""
    if record.get("complete", True):
        return str(record["seed"])
    last = max((e["step"] for e in record["evaluations"]), default=None)
    return f"{record['seed']} (unfinished: last evaluation at {last})"


def task_report(task: str, records: list[dict]) -> list[str]:
    by_side = {side: [r for r in records if r["side"] == side] for side in SIDES}
    settings = next(iter(records))["settings"]
    budgets = [str(b) for b in settings["budgets"]]
    steps = sorted({e["step"] for r in records for e in r["evaluations"]})
    seeds = {side: [seed_label(r) for r in sorted(by_side[side], key=lambda r: r["seed"])] for side in SIDES}
    lines = [
        f"## {task}",
        "",
        f"{settings['steps']} updates, evaluation every {settings['eval_every']} updates with {settings['episodes']} "
        f"episodes per budget; preset `{settings['preset']}`. Seeds: reference "
        f"{', '.join(seeds['reference']) or 'none'}; ours {', '.join(seeds['ours']) or 'none'}.",
        "",
        "Success rate: mean ± std over seeds (sample std, ddof=1), then each seed's value in seed order.",
        "",
    ]
    header = ["step"] + [f"b{b} {SIDE_TITLES[side]}" for b in budgets for side in SIDES]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in steps:
        cells = [str(step)] + [format_cell(success_at(by_side[side], step, b)) for b in budgets for side in SIDES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| side | updates/s (mean ± std (per seed)) | seeds per process | how timed |", "|---|---|---|---|"]
    for side in SIDES:
        if by_side[side]:
            timing = by_side[side][0]["timing"]
            together = timing.get("seeds_together", 1)
            lines.append(f"| {side} | {speed_cell(by_side[side])} | {together} | {timing.get('note', '')} |")
        else:
            lines.append(f"| {side} | — | — | not run |")
    head, detail = verdict(by_side, steps, budgets)
    lines += ["", f"**Verdict: {head}.**", "",
              "Rule: at the last evaluation step both sides have, for each budget, the two are indistinguishable when "
              "|mean_ref − mean_ours| ≤ √(std_ref² + std_ours²) (sample stds over seeds); all budgets must pass.", ""]
    lines += [f"- {line}" for line in detail]
    check = config_check(by_side)
    if check:
        lines += ["", "Config check (our run's config.json against the reference's flags.json):", "", *check]
    return lines + [""]


def build_report(records: list[dict]) -> str:
    """parity.md from the records: one section per task."""
    lines = ["# VGF parity: the authors' reference against ours", ""]
    if not records:
        return "\n".join(lines + ["No records yet.", ""])
    for task in sorted({r["task"] for r in records}):
        lines += task_report(task, [r for r in records if r["task"] == task])
    lines += [
        "Evaluation protocols differ (see benchmarks/parity/README.md): the reference also evaluates at update 1, "
        "resets its evaluation env without seeds (each budget sees other initial states) and draws action noise "
        "from numpy's global generator; ours resets episode i with seed `seed + i` for every budget.",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path) -> str:
    text = build_report(load_records(out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.md").write_text(text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="local checkout of github.com/ryanxhr/vgf (kept outside this repo)")
    parser.add_argument("--reference-python", help="the Python interpreter of the reference's environment")
    parser.add_argument("--reference-workdir", type=Path,
                        help="the reference's run directories, stubs and private HOME (default: <reference>/../parity-runs)")
    parser.add_argument("--reference-log-every", type=int, default=1000,
                        help="the reference's --log_interval: the intervals its speed is timed over")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="holds <dataset>-v0.npz and <dataset>-v0-val.npz")
    parser.add_argument("--task", default="cube-single-play-singletask-task1")
    parser.add_argument("--seeds", type=int_list, default=(0, 1))
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per budget")
    parser.add_argument("--budgets", type=int_list, default=(0, 1, 2, 3))
    parser.add_argument("--preset", default="cpu-small", help="our preset; the reference flags above match cpu-small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/parity"))
    parser.add_argument("--sides", default="reference,ours", help="which sides to run: reference, ours or both")
    parser.add_argument("--vgf", default="vgf", help="how to call our CLI")
    parser.add_argument("--ours-run-dir", type=Path, help="our runs' parent directory (default: runs/parity/<task>)")
    parser.add_argument("--ours-separately", dest="ours_together", action="store_false",
                        help="one `vgf train` process per seed instead of all seeds vmapped in one")
    parser.add_argument("--report-only", action="store_true", help="rebuild <out>/parity.md from the records only")
    parser.add_argument("--collect-only", action="store_true",
                        help="start nothing: record what the existing run directories hold, unfinished runs included "
                             "(their records say complete: false and are collected again next time)")
    args = parser.parse_args(argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if set(sides) - set(SIDES) or not sides:
        parser.error(f"--sides takes reference, ours or both, got {args.sides!r}")
    args.sides = sides
    if args.eval_every <= 0 or args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every (both sides then evaluate at the last update)")
    if args.eval_every % args.reference_log_every:
        parser.error("--eval-every must be a multiple of --reference-log-every (to time the reference between evaluations)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.report_only:
        dataset_name(args.task)  # fail early on a task name the reference cannot take
        if "reference" in args.sides:
            run_reference_side(args)
        if "ours" in args.sides:
            run_our_side(args)
    print(write_report(args.out))
    print(f"wrote {args.out / 'parity.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
