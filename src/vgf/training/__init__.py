"""Training loops, checkpoints and metric logging."""

from vgf.training.checkpoint import list_checkpoints, load_checkpoint, load_latest_checkpoint, save_checkpoint
from vgf.training.lock import RunDirectoryInUse
from vgf.training.logger import MetricsLogger
from vgf.training.offline import devices_line, load_run, settings_from_run, train, train_chunk
from vgf.training.online import ReplayBuffer, sample_batch, train_chunk_online, train_online
from vgf.training.policy import make_policy
from vgf.training.run import (
    TrainingDiverged,
    TrainingInterrupted,
    TrainSettings,
    deterministic_policy,
    eval_record,
    eval_record_name,
    evaluate_agent,
    evaluate_policy,
    interrupted_by,
    settings_suffix,
)

__all__ = [
    "MetricsLogger",
    "ReplayBuffer",
    "RunDirectoryInUse",
    "TrainSettings",
    "TrainingDiverged",
    "TrainingInterrupted",
    "deterministic_policy",
    "devices_line",
    "eval_record",
    "eval_record_name",
    "evaluate_agent",
    "evaluate_policy",
    "interrupted_by",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "load_run",
    "make_policy",
    "sample_batch",
    "save_checkpoint",
    "settings_from_run",
    "settings_suffix",
    "train",
    "train_chunk",
    "train_chunk_online",
    "train_online",
]
