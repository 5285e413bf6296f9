"""Experiment trackers beside a run's own metric files: TensorBoard event files and Weights & Biases runs.

`TrainSettings.loggers` (`--logger` on `vgf train`, `vgf bench` and `vgf sweep`) names them: `csv` is the run
directory's metrics.jsonl and metrics.csv, always written; `tensorboard` and `wandb` get every metric row too, with
the run's resolved config (its config.json).

* tensorboard: event files in `<run dir>/tensorboard/` (written with tensorboardX), so `tensorboard --logdir DIR`
  over a bench or sweep results directory shows one run per run directory. A resumed run purges the steps after its
  checkpoint, which it writes again.
* wandb: one W&B run per run directory, its files in `<run dir>/wandb/`, in the group `TrainSettings.group` (a bench's
  or sweep's results directory, the seeds of `vgf train --seeds`), plotted against `step`. The project is
  `$WANDB_PROJECT` (default `vgf`). `WANDB_MODE=offline` writes the run locally with no network (`wandb sync` uploads
  it later); online mode needs a key (`WANDB_API_KEY` or `wandb login`). A resumed run continues the same W&B run: its
  id is kept in `<run dir>/wandb-run-id`.

A tracker that cannot start (unknown name, package not installed, W&B online with no key or a bad one) is a
`TrackerError` before any training; one that fails mid-run is switched off with a warning and the run goes on.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
import warnings
from pathlib import Path

from vgf.training.logger import MetricsLogger

LOGGERS = ("csv", "tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}  # what each tracker imports to write
INSTALL_HINT = 'pip install "vgf[track]" (in a checkout: pip install -e ".[track]")'
WANDB_OFFLINE_MODES = ("offline", "dryrun", "disabled")
WANDB_ID_FILE = "wandb-run-id"


class TrackerError(ValueError):
    """A tracker that cannot start here; raised before any training."""


def parse_loggers(names) -> tuple[str, ...]:
    """`names` (comma-separated text or a sequence) in the order of LOGGERS, always with 'csv'; unknown names refused."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise TrackerError(f"unknown logger(s) {unknown}; valid loggers: {', '.join(LOGGERS)}")
    return tuple(name for name in LOGGERS if name == "csv" or name in names)


def check_loggers(loggers) -> None:
    """Refuse loggers that cannot start here: unknown names, packages not installed, W&B online without a valid key."""
    loggers = parse_loggers(loggers)
    for name in loggers[1:]:
        try:
            importlib.import_module(PACKAGES[name])
        except ImportError as error:
            raise TrackerError(f"logger {name!r} needs the {PACKAGES[name]} package ({error}): {INSTALL_HINT}") from None
    if "wandb" in loggers:
        check_wandb_login()


def check_wandb_login() -> None:
    """In W&B's online mode, a key must be set and accepted by the server (one request); offline modes need none."""
    import wandb

    if os.environ.get("WANDB_MODE", "online") in WANDB_OFFLINE_MODES:
        return
    offline = "or write the run locally with WANDB_MODE=offline (then `wandb sync` uploads it)"
    try:
        logged_in = wandb.login(verify=True, prompt=False)
    except Exception as error:  # wandb's AuthenticationError, or no answer from the server
        raise TrackerError(f"W&B cannot log in: {str(error).rstrip('.')}. Check WANDB_API_KEY (or `wandb login`), {offline}") from None
    if not logged_in:
        raise TrackerError(f"W&B is in online mode but no API key is set: set WANDB_API_KEY or run `wandb login`, {offline}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run_dir: Path, info: dict, start: int):
        from tensorboardX import SummaryWriter

        # TensorBoard drops the events a killed run wrote after its checkpoint at `start`: they are written again. Files
        # are read in name order: the start step in the name keeps a resume within the same second after its original.
        self.writer = SummaryWriter(
            logdir=str(run_dir / "tensorboard"), purge_step=start + 1, filename_suffix=f".step{start:09d}"
        )
        self.writer.add_text("config", "```json\n" + json.dumps(info, indent=2) + "\n```", start)
        self.writer.flush()

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "step" and is_number(value):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()  # a killed run keeps every row it logged

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, info: dict, group: str | None):
        import wandb

        id_file = run_dir / WANDB_ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(8))  # W&B ids: lowercase letters and digits
        run_id = id_file.read_text().strip()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "vgf"),
            dir=str(run_dir),
            id=run_id,
            name=run_dir.name,
            group=group,
            config=info,
            resume="allow",
            reinit="create_new",  # seeds trained together are W&B runs open side by side
            settings=wandb.Settings(console="off", quiet=True),  # leave stdout (progress bars, tables) to vgf
        )
        self.run.define_metric("*", step_metric="step")  # rows a resumed run writes again need no rising W&B step

    def log(self, row: dict) -> None:
        self.run.log(dict(row))

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class TrackedMetricsLogger(MetricsLogger):
    """The run's metric files, and every row also to its trackers. A tracker that fails mid-run is switched off with a
    warning; the files, written first, keep every row."""

    def __init__(self, run_dir: Path, trackers: list):
        super().__init__(run_dir)
        self.trackers = trackers

    def log(self, row: dict) -> None:
        super().log(row)
        for tracker in list(self.trackers):
            try:
                tracker.log(row)
            except Exception as error:
                self.trackers.remove(tracker)
                warnings.warn(
                    f"logger {tracker.name!r} failed at step {row['step']} and is off for the rest of this run, which goes "
                    f"on ({Path(self.jsonl_path).name} has every row): {type(error).__name__}: {error}",
                    stacklevel=2,
                )

    def close(self) -> None:
        """Close every tracker; a W&B run is marked failed when an exception is on its way out."""
        failed = sys.exc_info()[0] is not None
        for tracker in self.trackers:
            try:
                tracker.close(failed)
            except Exception as error:
                warnings.warn(f"logger {tracker.name!r} failed to close: {type(error).__name__}: {error}", stacklevel=2)
        self.trackers = []


def open_run_logger(run_dir: Path, loggers, group: str | None, start: int) -> TrackedMetricsLogger:
    """The metric logger of the run in `run_dir` (its config.json written), starting (or resuming) at `start`."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    trackers: list = []
    try:
        for name in parse_loggers(loggers)[1:]:
            trackers.append(TensorBoardTracker(run_dir, info, start) if name == "tensorboard" else WandbTracker(run_dir, info, group))
    except Exception as error:
        for tracker in trackers:
            tracker.close(failed=True)
        raise TrackerError(f"logger {name!r} cannot start for {run_dir}: {type(error).__name__}: {error}") from error
    return TrackedMetricsLogger(run_dir, trackers)
