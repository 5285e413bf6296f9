"""The one scheduler for grids of runs: each run is a Ray task that calls `vgf.training.train` in a worker.

Ray runs on a local instance started for the sweep (one run per core by default) or on an existing cluster
(`address="auto"` or `"ray://host:port"`). The results directory must be visible at the same path to this process
and to every worker (a shared file system on a cluster). Finished runs are skipped, interrupted ones resume from
their checkpoint (`train` resumes an existing run directory), and a failed run is submitted again up to `retries`
times; its errors and tracebacks go to `failure.json` in its run directory, and the other runs go on. A worker that
dies (the OOM killer, a lost node, preemption) is such a failure: the retry resumes from the run's last checkpoint,
which the run directory's lock (`vgf.training.lock`, released by the kernel with the dead process) lets it take. A run
whose directory another live launch holds fails at once with that launch's pid in its error, and nothing is written
into the directory, which belongs to the other launch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import ray

from vgf.agents import config_from_dict, make_config
from vgf.sweep.grid import Resources, RunSpec
from vgf.training.checkpoint import atomic_write_text, list_checkpoints
from vgf.training.lock import RunDirectoryInUse

FAILURE_FILE = "failure.json"
_POLL_SECONDS = 0.5
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class RunStopped(RuntimeError):
    """A run's worker was stopped by a signal after checkpointing its last logged step."""


class RunState(str, enum.Enum):
    PENDING = "pending"  # submitted, waiting for a worker (or for its retry)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # failed on its last allowed attempt


@dataclasses.dataclass
class RunStatus:
    spec: RunSpec
    state: RunState = RunState.PENDING
    attempts: int = 0  # submissions in this launch
    step: int = 0  # newest logged step of the current attempt
    resumed_from: int | None = None  # the step the current attempt started from (0: from scratch), once it reports
    skipped: bool = False  # found finished in the results directory, not run again
    error: str | None = None  # the last attempt's error, one line
    seconds: float = 0.0  # wall time of the last attempt from when it was seen running (or submitted)
    began: float = 0.0  # time.monotonic() of that moment


def is_finished(spec: RunSpec, results_dir: Path) -> bool:
    """Whether `results_dir` already holds this run trained to `spec.steps`: its own settings and agent config, a
    checkpoint at (or past) the last step and that step's evaluation row. A directory holding another run is not
    finished: training it reports the clash. That includes a run whose preset has changed since it was trained (a new
    default or per-environment value): its stored config, read as it was trained, differs from today's."""
    run_dir = spec.run_dir(results_dir)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not checkpoints or checkpoints[-1][0] < spec.steps or not (run_dir / "config.json").exists():
        return False
    info = json.loads((run_dir / "config.json").read_text())
    stored = info["settings"]
    ours = dataclasses.asdict(spec.train_settings(results_dir))
    identity = ("agent", "task", "seed", "preset", "overrides")
    if any(json.dumps(stored[key], sort_keys=True) != json.dumps(ours[key], sort_keys=True) for key in identity):
        return False
    if "agent_config" in info:
        try:
            if config_from_dict(spec.agent, info["agent_config"]) != make_config(
                spec.agent, spec.preset, dict(spec.overrides), task=spec.task
            ):
                return False
        except (TypeError, ValueError):
            return False
    metrics = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return any(row["step"] >= spec.steps and any(key.startswith("eval/") for key in row) for row in rows)


XLA_DEFAULT_MEMORY_FRACTION = 0.75  # of a GPU's memory, what XLA preallocates for a process alone on it


def worker_environment(resources: Resources) -> dict[str, str]:
    """Environment variables of the workers, so that parallel runs do not fight over cores or GPU memory.

    XLA's CPU client sizes its thread pool by the machine, not by the CPUs Ray reserved: a one-CPU run gets a
    one-thread XLA, and each run's evaluation steps its envs in as many worker processes as it has CPUs (cores //
    concurrent runs; `vgf.evaluation.env_workers`). Runs without a GPU stay off any GPU.

    A run holding a fraction of a GPU preallocates that fraction of XLA's default 75%, so that four runs of 0.25
    together take what one run alone would. Preallocated, each run holds its share from its start: one that needs
    more fails at once with an out-of-memory error of its own instead of growing into its neighbours' memory, and its
    pool does not fragment as allocation on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false) does. jaxlib reads
    XLA_CLIENT_MEM_FRACTION, or its older spelling XLA_PYTHON_CLIENT_MEM_FRACTION, and refuses both at once (the GPU
    plugin then fails to load): the older one is blanked, so that a value inherited from the launching shell cannot
    clash. These are the worker process's environment from its start (Ray's runtime_env), before it imports JAX.
    """
    env = {"VGF_ENV_WORKERS": str(max(1, int(resources.cpus_per_run)))}
    if resources.cpus_per_run <= 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    if resources.gpus_per_run == 0:
        env["JAX_PLATFORMS"] = "cpu"
    elif resources.gpus_per_run < 1:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
        env["XLA_CLIENT_MEM_FRACTION"] = f"{XLA_DEFAULT_MEMORY_FRACTION * resources.gpus_per_run:.4g}"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = ""  # read as unset
    return env


def run_options(resources: Resources) -> dict:
    """The Ray task options of one run: what it reserves, and the environment its worker starts with."""
    return dict(
        num_cpus=resources.cpus_per_run,
        num_gpus=resources.gpus_per_run,
        max_retries=0,  # retries are resubmitted by `run_grid`, so that each attempt is recorded and shown
        runtime_env={"env_vars": worker_environment(resources)},
    )


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Where workers say which attempt of which run started, the step it resumed from, and how far it got; the driver
    polls it."""

    def __init__(self):
        self.runs: dict[str, tuple[int, int, int | None]] = {}  # name -> (attempt, step, step it resumed from)

    def report(self, name: str, attempt: int, step: int, resumed_from: int | None = None) -> None:
        if resumed_from is None and name in self.runs and self.runs[name][0] == attempt:
            resumed_from = self.runs[name][2]
        self.runs[name] = (attempt, step, resumed_from)

    def snapshot(self) -> dict[str, tuple[int, int, int | None]]:
        return dict(self.runs)


def train_run(spec: RunSpec, results_dir: str, board, attempt: int) -> str:
    """The Ray task: train (or resume) one run, reporting its progress to `board`.

    SIGINT and SIGTERM checkpoint the last logged step. SIGINT is how `ray.cancel` stops a task (the driver's Ctrl-C
    or `kill`): a worker started from a shell's background job would inherit it ignored. SIGTERM replaces Ray's exit
    while the run trains, so that a worker told to stop keeps its updates; the attempt fails and its retry resumes."""
    from vgf.training import TrainingInterrupted, interrupted_by, train

    board.report.remote(spec.name, attempt, 0)
    try:
        with interrupted_by(signal.SIGINT, signal.SIGTERM):
            train(
                spec.train_settings(results_dir),
                progress=lambda step, _total, _row: board.report.remote(spec.name, attempt, step),
                on_start=lambda step: board.report.remote(spec.name, attempt, step, resumed_from=step),
            )
    except TrainingInterrupted as interrupted:  # Ray would report a bare TaskCancelledError
        raise RunStopped(f"stopped by a signal; checkpoint saved at step {interrupted.step}") from None
    return spec.name


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Connect to `address`, or start a local Ray instance with `num_cpus` (default: all cores) and stop it after.

    An already initialised Ray (a test fixture, a notebook) is used as it is and left running. The caller's SIGTERM
    handler outlives `ray.init`, which replaces it with an exit that would skip the runs' checkpoints.
    """
    if ray.is_initialized():
        yield
        return
    common = dict(log_to_driver=False, logging_level=logging.WARNING)  # worker output would tear the live display
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **common)
    if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()


def _describe(error: Exception) -> tuple[str, str]:
    """(one-line message, full traceback) of a failed Ray task."""
    cause = getattr(error, "cause", None)
    message = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else f"{type(error).__name__}: {error}"
    return _ANSI_ESCAPE.sub("", message.strip().splitlines()[0]), _ANSI_ESCAPE.sub("", str(error))


def _record_failure(run_dir: Path, attempt: int, message: str, traceback: str) -> None:
    path = run_dir / FAILURE_FILE
    attempts = json.loads(path.read_text())["attempts"] if path.exists() and attempt > 1 else []
    attempts.append({"attempt": attempt, "error": message, "traceback": traceback, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"run": run_dir.name, "attempts": attempts}, indent=2))


def run_grid(
    specs: list[RunSpec],
    results_dir: Path | str,
    resources: Resources = Resources(),
    retries: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    on_change: Callable[[list[RunStatus]], None] | None = None,
) -> list[RunStatus]:
    """Train every run of `specs` that is not finished in `results_dir`, in parallel on Ray; returns their statuses.

    `on_change(statuses)` is called whenever a run changes state or step (and once at the start). A failed run is
    submitted again up to `retries` times, then marked failed; the others go on. On Ctrl-C the running runs are
    cancelled (each writes a checkpoint of its last logged step) before KeyboardInterrupt propagates.
    """
    results_dir = Path(results_dir).resolve()
    statuses = [RunStatus(spec) for spec in specs]
    for status in statuses:
        if is_finished(status.spec, results_dir):
            status.state, status.skipped, status.step = RunState.DONE, True, status.spec.steps
    todo = [status for status in statuses if status.state is RunState.PENDING]
    if on_change is not None:
        on_change(statuses)
    if not todo:
        return statuses
    if address is None and resources.cpus_per_run > (num_cpus or os.cpu_count()):
        raise ValueError(f"each run needs {resources.cpus_per_run:g} CPUs but the local Ray instance has {num_cpus or os.cpu_count()}")

    with ray_session(address, num_cpus):
        board = ProgressBoard.remote()
        task = ray.remote(train_run).options(**run_options(resources))
        in_flight: dict[ray.ObjectRef, RunStatus] = {}

        def submit(status: RunStatus) -> None:
            status.attempts += 1
            status.state, status.step, status.resumed_from, status.began = RunState.PENDING, 0, None, time.monotonic()
            in_flight[task.remote(status.spec, str(results_dir), board, status.attempts)] = status

        for status in todo:
            submit(status)
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=_POLL_SECONDS)
                changed = _apply_progress(ray.get(board.snapshot.remote()), list(in_flight.values()))
                for ref in ready:
                    status = in_flight.pop(ref)
                    status.seconds = time.monotonic() - status.began
                    changed = True
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as error:
                        status.error, traceback = _describe(error)
                        if isinstance(getattr(error, "cause", None), RunDirectoryInUse):
                            status.state = RunState.FAILED  # another launch trains it: nothing of that run is ours to record
                            continue
                        try:
                            _record_failure(status.spec.run_dir(results_dir), status.attempts, status.error, traceback)
                        except OSError as unrecorded:  # a full disk must not stop the other runs
                            status.error += f" (not recorded in {FAILURE_FILE}: {unrecorded})"
                        if status.attempts <= retries:
                            submit(status)
                        else:
                            status.state = RunState.FAILED
                    else:
                        status.state, status.step, status.error = RunState.DONE, status.spec.steps, None
                        (status.spec.run_dir(results_dir) / FAILURE_FILE).unlink(missing_ok=True)
                if changed and on_change is not None:
                    on_change(statuses)
        except KeyboardInterrupt:
            for ref in in_flight:
                ray.cancel(ref)  # raises KeyboardInterrupt in the worker: `train` checkpoints its last logged step
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=30)
            raise
    return statuses


def _apply_progress(board: dict[str, tuple[int, int, int | None]], active: list[RunStatus]) -> bool:
    """Move runs whose current attempt has reported to running, with their newest step and the step they resumed from;
    True if anything changed."""
    changed = False
    for status in active:
        attempt, step, resumed_from = board.get(status.spec.name, (0, 0, None))
        if attempt != status.attempts:
            continue  # not started yet, or a report from the previous attempt
        if status.state is not RunState.RUNNING:
            status.state, status.began, changed = RunState.RUNNING, time.monotonic(), True
        if (status.step, status.resumed_from) != (step, resumed_from):
            status.step, status.resumed_from, changed = step, resumed_from, True
    return changed
