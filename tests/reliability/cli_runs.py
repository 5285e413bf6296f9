"""The real `vgf` CLI in subprocesses on the fast bandit task, and what a finished run is compared by.

Every run in the suite uses `train_args`, so any run that was killed, interrupted or damaged and then resumed must end
with exactly the parameters and metric rows of the `reference_run` fixture, the same run never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

STEPS, EVAL_EVERY, LOG_EVERY, CHECKPOINT_EVERY, KEEP = 120, 40, 10, 20, 3
TIMEOUT = 240  # seconds for one CLI run, compile included, on a busy 2-core machine


def train_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "vgf", "--task", "bandit", "--preset", "bandit", "--steps", str(STEPS),
        "--eval-every", str(EVAL_EVERY), "--log-every", str(LOG_EVERY), "--checkpoint-every", str(CHECKPOINT_EVERY),
        "--keep-checkpoints", str(KEEP), "--eval-episodes", "20", "--eval-budgets", "0,2", "--run-dir", str(run_dir),
        *extra,
    ]  # fmt: skip


def resume_args(run_dir: Path) -> list[str]:
    return ["train", "--resume", str(run_dir)]


def default_sigint() -> None:
    """In the child: SIGINT back to its default. A shell without job control starts background commands (a test
    suite run with `&`) with SIGINT ignored, their children inherit that, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CLI:
    """Starts `python -m vgf.cli ...` with a shared JAX compilation cache, so only the first run pays for compiling."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.cache = {
            "JAX_COMPILATION_CACHE_DIR": str(work_dir / "jax-cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
        self.count = 0

    def start(self, args: list[str], cached: bool = True, program: list[str] = ("-m", "vgf.cli")) -> subprocess.Popen:
        """Start `vgf ARGS`; `cached=False` for a run alongside another, as both would write the same cache entries.
        `program`: what Python runs instead of `-m vgf.cli` (a wrapper that injects faults, then calls the CLI)."""
        self.count += 1
        log = self.work_dir / f"run{self.count}"
        env = {**os.environ, "JAX_PLATFORMS": "cpu", **(self.cache if cached else {})}
        with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:  # the child keeps its own copies
            process = subprocess.Popen(
                [sys.executable, *program, *args], cwd=self.work_dir, env=env, stdout=out, stderr=err,
                preexec_fn=default_sigint,
            )
        process.log = log
        return process

    @staticmethod
    def finish(process: subprocess.Popen) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once `process` ends; whitespace is collapsed, as the terminal width wraps lines."""
        code = process.wait(TIMEOUT)
        return code, *(" ".join(Path(f"{process.log}.{name}").read_text().split()) for name in ("out", "err"))

    def run(self, args: list[str], program: list[str] = ("-m", "vgf.cli")) -> tuple[int, str, str]:
        return self.finish(self.start(args, program=program))


def logged_step(run_dir: Path) -> int:
    """The step of the newest metric row; 0 before the first row, -1 before the metrics file exists."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return -1
    return max((json.loads(line)["step"] for line in path.read_text().splitlines()), default=0)


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    """Return once a metric row of `step` or later is written (or the process ended)."""
    deadline = time.monotonic() + TIMEOUT
    while logged_step(run_dir) < step and process.poll() is None:
        assert time.monotonic() < deadline, f"no row for step {step} within {TIMEOUT} s"
        time.sleep(0.01)


def metric_rows(run_dir: Path) -> list[dict]:
    """Every metric row without its timing column: the train/* and eval/* values a resume must reproduce."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "updates_per_s"} for row in rows]


def final_state(run_dir: Path) -> tuple[int, list[np.ndarray]]:
    from vgf.training import load_run

    _, agent, step = load_run(run_dir)
    return step, [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(agent)]
