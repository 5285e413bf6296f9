"""Tests for `--logger` (vgf.training.tracking): what TensorBoard and W&B hold is read back with their own formats,
and a logger that cannot start stops the run before any training.

W&B runs in offline mode (no network); TensorBoard event files are read with TensorBoard's EventAccumulator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vgf.cli import main
from vgf.data import make_bandit_dataset
from vgf.sweep import Grid, GridError
from vgf.training import train
from vgf.training.tracking import TensorBoardTracker, TrackedMetricsLogger, TrackerError, check_loggers, parse_loggers

# As in test_training.py, so the suite compiles these bandit runs once.
BANDIT_FLAGS = ["--preset", "bandit", "--eval-every", "20", "--log-every", "10", "--eval-episodes", "100", "--eval-budgets", "0,8"]
BANDIT = dict(preset="bandit", eval_every=10, eval_episodes=100, eval_budgets=(0, 8))  # a bench run logs at eval steps


def fresh_wandb():
    """wandb reads its mode from the environment once per process: reset it between tests that change it."""
    import wandb

    wandb.teardown()


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    fresh_wandb()
    yield
    fresh_wandb()


@pytest.fixture
def wandb_online_without_key(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from a `wandb login`
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    fresh_wandb()
    yield
    fresh_wandb()


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def wandb_records(run_dir: Path) -> list:
    """The records of the run's offline .wandb file: W&B's protobuf `Record`s in LevelDB-log framing (a 7-byte file
    header, then 32 KiB blocks of records, each with a 7-byte header: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(records) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def test_a_bench_run_writes_every_row_to_tensorboard_and_wandb_with_its_config_and_group(tmp_path, wandb_offline):
    results = tmp_path / "bench-results"
    (spec,) = Grid(agents=("vgf",), tasks=("bandit",), seeds=(0,), steps=20, loggers=("tensorboard", "wandb"), **BANDIT).runs()
    settings = spec.train_settings(results)
    assert (settings.loggers, settings.group) == (("csv", "tensorboard", "wandb"), "bench-results")
    train(settings, dataset=make_bandit_dataset())
    run_dir = results / spec.name
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [10, 20] and "eval/budget_8/success" in rows[-1]

    scalars = tensorboard_scalars(run_dir / "tensorboard")
    numeric = {key for row in rows for key, value in row.items() if key != "step" and isinstance(value, (int, float))}
    assert set(scalars) == numeric
    for row in rows:
        for key in numeric & set(row):
            assert scalars[key][row["step"]] == pytest.approx(row[key], rel=1e-6)  # float32 in the event file

    records = wandb_records(run_dir)
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.display_name, run.project) == ("bench-results", spec.name, "vgf")
    assert run.run_id == (run_dir / "wandb-run-id").read_text()
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["agent_config"] == json.loads((run_dir / "config.json").read_text())["agent_config"]
    assert config["settings"]["loggers"] == ["csv", "tensorboard", "wandb"]
    history = wandb_history(records)
    assert len(history) == len(rows)
    for logged, row in zip(history, rows):
        assert {key: logged[key] for key in row} == pytest.approx(row)


def test_a_resumed_run_replaces_the_tensorboard_steps_it_writes_again(tmp_path):
    run_dir = tmp_path / "run"
    first = TensorBoardTracker(run_dir, {"agent": "vgf"}, start=0)
    for step in (10, 20, 30):
        first.log({"step": step, "train/loss": float(step), "phase": "offline"})
    first.close(failed=True)
    resumed = TensorBoardTracker(run_dir, {"agent": "vgf"}, start=10)  # killed after the checkpoint of step 10
    for step in (20, 30):
        resumed.log({"step": step, "train/loss": -float(step)})
    resumed.close(failed=False)
    assert tensorboard_scalars(run_dir / "tensorboard") == {"train/loss": {10: 10.0, 20: -20.0, 30: -30.0}}


def test_a_tracker_failing_mid_run_is_switched_off_with_a_warning_and_the_files_keep_every_row(tmp_path):
    class Broken:
        name = "wandb"

        def log(self, row):
            raise ConnectionError("server gone")

        def close(self, failed):
            pass

    logger = TrackedMetricsLogger(tmp_path, [Broken()])
    with pytest.warns(UserWarning, match="'wandb' failed at step 1 .*ConnectionError: server gone"):
        logger.log({"step": 1, "train/loss": 1.0})
    logger.log({"step": 2, "train/loss": 0.5})  # no second warning: the tracker is off
    logger.close()
    assert [row["step"] for row in read_rows(tmp_path)] == [1, 2]


def test_logger_names_parse_in_a_fixed_order_with_csv_always_on():
    assert parse_loggers("wandb, tensorboard") == ("csv", "tensorboard", "wandb")
    assert parse_loggers(()) == ("csv",)
    with pytest.raises(TrackerError, match=r"unknown logger\(s\) \['mlflow'\]; valid loggers: csv, tensorboard, wandb"):
        parse_loggers("tensorboard,mlflow")


def run_train(run_dir: Path, *flags: str) -> int:
    return main(["train", "vgf", "--task", "bandit", "--steps", "20", *BANDIT_FLAGS, "--run-dir", str(run_dir), *flags])


def test_an_unknown_logger_is_refused_by_every_command(tmp_path, capsys):
    for command in (["train", "vgf", "--task", "bandit"], ["bench", "--agents", "vgf"], ["sweep", "examples/sweep.yaml"]):
        with pytest.raises(SystemExit) as stopped:
            main([*command, "--logger", "tensorboard,mlflow"])
        assert stopped.value.code == 2
        assert "unknown logger(s) ['mlflow']" in capsys.readouterr().err


def test_a_missing_tracker_package_stops_the_run_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails, as when the [track] extra is not installed
    assert run_train(tmp_path / "run", "--logger", "tensorboard") == 2
    err = capsys.readouterr().err
    assert "logger 'tensorboard' needs the tensorboardX package" in err and 'pip install "vgf[track]"' in err
    assert not (tmp_path / "run").exists()


def test_wandb_online_without_a_key_stops_the_run_and_the_sweep_before_anything_is_written(tmp_path, capsys, wandb_online_without_key):
    assert run_train(tmp_path / "run", "--logger", "wandb") == 2
    assert "W&B is in online mode but no API key is set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(GridError, match="loggers: W&B is in online mode but no API key is set.*WANDB_MODE=offline"):
        Grid(agents=("bc",), tasks=("bandit",), seeds=(0,), steps=20, loggers=("wandb",)).runs()


def test_wandb_refuses_a_malformed_key_before_training(monkeypatch, wandb_online_without_key):
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    with pytest.raises(TrackerError, match="W&B cannot log in: .*Check WANDB_API_KEY"):
        check_loggers(("wandb",))


def test_seeds_trained_together_form_one_wandb_group(tmp_path, monkeypatch):
    from vgf.training import offline

    seen = []
    monkeypatch.setattr(offline, "train_seeds", lambda group, **_: seen.append(group) or [{} for _ in group])
    assert main(["train", "vgf", "--task", "bandit", "--seeds", "0,1", "--run-dir", str(tmp_path / "cube-seeds"), "--logger", "tensorboard"]) == 0
    assert [(s.group, s.loggers, Path(s.run_dir).name) for s in seen[0]] == [
        ("cube-seeds", ("csv", "tensorboard"), "s0"),
        ("cube-seeds", ("csv", "tensorboard"), "s1"),
    ]
