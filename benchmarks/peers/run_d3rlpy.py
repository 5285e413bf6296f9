"""An outside check of the baselines: d3rlpy's IQL and TD3+BC on vgf's locomotion files, evaluated in vgf's envs.

d3rlpy pins gymnasium 1.0.0, so it lives in a virtual environment of its own (see README.md here) and is only ever
run as a program: `d3rlpy_train.py`, with that environment's Python, trains on the HDF5 file and saves its policy as
TorchScript every `--eval-every` updates. This driver (vgf's environment) then evaluates each saved policy with
`vgf.training.evaluate_policy`: the same Gymnasium env, reset seeds (seed + episode) and episode count as a vgf run
of that seed, D4RL's normalised score included. A run whose training finished is not trained again, a policy already
evaluated is not evaluated again: running the same command resumes.

    python benchmarks/peers/run_d3rlpy.py --python /work/peers-venv/bin/python --tasks d4rl:hopper-medium-replay-v5 \
        --data-dir benchmarks/data/locomotion --seeds 0,1,2 --steps 100000 --eval-every 10000 --episodes 10 \
        --runs-dir /work/vgf-bench/peers --records-dir benchmarks/results/locomotion/study-peers
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vgf.envs import task_spec
from vgf.files import atomic_write_text
from vgf.training import deterministic_policy, evaluate_policy

TRAINER = Path(__file__).with_name("d3rlpy_train.py")
ALGORITHMS = ("iql", "td3+bc")


def torchscript_actor(path: Path):
    import torch

    module = torch.jit.load(str(path))

    def act(observations):
        with torch.no_grad():
            return module(torch.as_tensor(observations, dtype=torch.float32)).numpy()

    return act


def train(python: str, algo: str, dataset: Path, args, seed: int, run_dir: Path) -> None:
    if (run_dir / "versions.json").is_file():
        return
    command = [python, str(TRAINER), "--algo", algo, "--dataset", str(dataset), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--seed", str(seed), "--out", str(run_dir)]
    began = time.perf_counter()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one run per core
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=environment)
    (run_dir / "train_seconds.txt").write_text(f"{time.perf_counter() - began:.1f}\n")


def evaluate_saved(task: str, run_dir: Path, seed: int, episodes: int, records: Path) -> None:
    """One row per saved policy (step order) in `records/eval.jsonl`, with d3rlpy's losses of that epoch."""
    done = {row["step"]: row for row in read_rows(records / "eval.jsonl")}
    losses = {row["step"]: row for row in read_rows(run_dir / "metrics.jsonl")}
    steps = sorted(int(m[1]) for p in run_dir.glob("policy_*.pt") if (m := re.match(r"policy_(\d+)\.pt$", p.name)))
    for step in steps:
        if step in done:
            continue
        results = evaluate_policy(deterministic_policy(torchscript_actor(run_dir / f"policy_{step}.pt")), task, [0],
                                  episodes, seed, per_episode=True)[0]
        done[step] = {"step": step, **{f"train/{k}": v for k, v in losses.get(step, {}).items() if k != "step"},
                      **{f"eval/budget_0/{k}": results[k] for k in ("return", "return_std", "length", "normalized_score")},
                      "eval/budget_0/per_episode_return": results["per_episode"]["return"]}
    atomic_write_text(records / "eval.jsonl", "".join(json.dumps(done[step]) + "\n" for step in sorted(done)))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the Python of the virtual environment d3rlpy is installed in")
    parser.add_argument("--tasks", required=True, help="comma-separated d4rl: tasks, e.g. d4rl:hopper-medium-replay-v5")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--algos", default=",".join(ALGORITHMS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--runs-dir", required=True, help="d3rlpy's runs and policies (large; not committed)")
    parser.add_argument("--records-dir", required=True, help="one folder per run: config.json and eval.jsonl")
    args = parser.parse_args(argv)
    for task in args.tasks.split(","):
        dataset = Path(args.data_dir) / f"{task_spec(task).dataset_name}.hdf5"
        for algo in args.algos.split(","):
            if algo not in ALGORITHMS:
                parser.error(f"unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}")
            for seed in map(int, args.seeds.split(",")):
                name = f"d3rlpy-{algo}-{task.removeprefix('d4rl:')}-s{seed}"
                run_dir, records = Path(args.runs_dir) / name, Path(args.records_dir) / name
                run_dir.mkdir(parents=True, exist_ok=True)
                records.mkdir(parents=True, exist_ok=True)
                train(args.python, algo, dataset, args, seed, run_dir)
                evaluate_saved(task, run_dir, seed, args.episodes, records)
                versions = json.loads((run_dir / "versions.json").read_text())
                config = {"agent": f"d3rlpy-{algo}", "task": task, "seed": seed, "steps": args.steps,
                          "eval_every": args.eval_every, "episodes": args.episodes, "versions": versions,
                          "train_seconds": float((run_dir / "train_seconds.txt").read_text()),
                          "settings": "d3rlpy 2.8.1 reproductions/offline scripts (benchmarks/peers/d3rlpy_train.py)"}
                atomic_write_text(records / "config.json", json.dumps(config, indent=1))
                scores = [row["eval/budget_0/normalized_score"] for row in read_rows(records / "eval.jsonl")]
                print(f"{name}: normalised score at the last evaluation {scores[-1]:.1f} (best {np.max(scores):.1f})",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
