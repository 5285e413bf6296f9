"""The parity harness's report builder (benchmarks/parity/run_parity.py) on synthetic records: no subprocess."""

import importlib.util
import json
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "parity" / "run_parity.py"


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("run_parity", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETTINGS = {"task": "cube-single-play-singletask-task1", "steps": 10000, "eval_every": 5000, "episodes": 20,
            "budgets": [0, 1, 2, 3], "preset": "cpu-small"}

OUR_CONFIG = {"hidden_dims": [256, 256, 256], "critic_layer_norm": True, "actor_layer_norm": False,
              "learning_rate": 3e-4, "batch_size": 256, "discount": 0.99, "tau": 0.005, "critic_loss": "mse",
              "bc_flow_steps": 5, "num_particles": 8, "train_vgf_steps": 2, "vgf_lr": 0.05, "vgf_alpha": 0.5,
              "transport_q_agg": "mean", "target_q_agg": "mean", "select_q_agg": "mean",
              "train_particle_select": "mean", "eval_particle_select": "max"}

REF_CONFIG = {"value_hidden_dims": [256, 256, 256], "actor_hidden_dims": [256, 256, 256], "layer_norm": True,
              "actor_layer_norm": False, "value_lr": 3e-4, "actor_lr": 3e-4, "batch_size": 256, "discount": 0.99,
              "tau": 0.005, "critic_loss": "td", "bc_flow_steps": 5, "vgf_particles": 8, "train_vgf_steps": 2,
              "vgf_lr": 0.05, "vgf_alpha": 0.5, "vgf_q_agg": "mean", "train_q_agg": "mean",
              "train_particle_select": "mean", "eval_particle_select": "max"}


def record(side, seed, final, speed, config=None, first=(0.0, 0.0, 0.0, 0.0)):
    steps = [1, 5000, 10000] if side == "reference" else [5000, 10000]
    values = {1: (0.0, 0.0, 0.0, 0.0), 5000: first, 10000: final}
    return {
        "side": side, "task": SETTINGS["task"], "seed": seed, "settings": SETTINGS,
        "config": config if config is not None else (REF_CONFIG if side == "reference" else OUR_CONFIG),
        "evaluations": [{"step": s, "success": {str(b): v for b, v in enumerate(values[s])}, "return": {}}
                        for s in steps],
        "timing": {"updates_per_s": speed, "seeds_together": 2 if side == "ours" else 1, "note": "test"},
    }


def test_table_cells_and_indistinguishable_verdict(parity):
    records = [
        record("reference", 0, (0.50, 0.40, 0.20, 0.10), 5.0),
        record("reference", 1, (0.30, 0.20, 0.10, 0.00), 6.0),
        record("ours", 0, (0.45, 0.30, 0.15, 0.05), 7.0),
        record("ours", 1, (0.35, 0.30, 0.15, 0.05), 8.0),
    ]
    text = parity.build_report(records)
    assert "| step | b0 ref | b0 ours | b1 ref | b1 ours | b2 ref | b2 ours | b3 ref | b3 ours |" in text
    # Budget 0 at step 10000: reference 0.40 ± 0.14 (0.50, 0.30), ours 0.40 ± 0.07 (0.45, 0.35).
    row = next(line for line in text.splitlines() if line.startswith("| 10000 |"))
    assert "| 0.40 ± 0.14 (0.50, 0.30) | 0.40 ± 0.07 (0.45, 0.35) |" in row
    # The reference's update-1 evaluation has a row of its own, empty on our side.
    row1 = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert row1.count("—") == 4
    assert "| reference | 5.50 ± 0.71 (5.00, 6.00) | 1 |" in text
    assert "| ours | 7.50 ± 0.71 (7.00, 8.00) | 2 |" in text
    assert "**Verdict: INDISTINGUISHABLE within seed spread at step 10000 (every budget).**" in text
    assert "**NO**" not in text  # the config check finds every mapped field equal


def test_verdict_different_when_gap_exceeds_combined_std(parity):
    records = [
        record("reference", 0, (0.80, 0.40, 0.20, 0.10), 5.0),
        record("reference", 1, (0.80, 0.20, 0.10, 0.00), 5.0),
        record("ours", 0, (0.10, 0.30, 0.15, 0.05), 7.0),
        record("ours", 1, (0.10, 0.30, 0.15, 0.05), 7.0),
    ]
    head, lines = parity.verdict({"reference": records[:2], "ours": records[2:]}, [1, 5000, 10000], ["0", "1", "2", "3"])
    assert head == "DIFFERENT at step 10000: budget(s) 0 outside seed spread"
    assert lines[0].startswith("budget 0: |0.80 - 0.10| = 0.70 > combined std 0.00")


def test_one_seed_gives_no_verdict_and_config_mismatch_is_flagged(parity):
    mismatched = dict(REF_CONFIG, vgf_particles=10)
    records = [record("reference", 0, (0.5, 0.4, 0.2, 0.1), 5.0, config=mismatched),
               record("ours", 0, (0.5, 0.4, 0.2, 0.1), 7.0)]
    text = parity.build_report(records)
    assert "no verdict at step 10000: too few seeds" in text
    assert "| num_particles | 8 | vgf_particles | 10 | **NO** |" in text


def test_report_only_rebuilds_from_written_records(parity, tmp_path):
    for rec in [record("reference", 0, (0.5, 0.4, 0.2, 0.1), 5.0), record("ours", 0, (0.5, 0.4, 0.2, 0.1), 7.0)]:
        parity.write_json(parity.record_path(tmp_path, rec["task"], rec["side"], rec["seed"]), rec)
    assert parity.main(["--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "parity.md").read_text()
    assert "## cube-single-play-singletask-task1" in text
    assert json.loads((tmp_path / SETTINGS["task"] / "ours-s0.json").read_text())["seed"] == 0


def test_reference_speed_leaves_out_intervals_with_an_evaluation(parity):
    # Logs every 1000 updates, evaluations at 1, 5000 and 10000: the intervals ending at 1000 (update-1 evaluation)
    # and 6000 (evaluation at 5000) are left out.
    rows = [{"step": str(s), "time/epoch_time": str(0.5 if s in (1000, 6000) else 0.2), "time/total_time": "0"}
            for s in range(1000, 10001, 1000)]
    timing = parity.reference_updates_per_s(rows, eval_every=5000, log_every=1000)
    assert timing["timed_intervals"] == 8
    assert timing["updates_per_s"] == pytest.approx(5.0)


def test_task_names(parity):
    assert parity.dataset_name("cube-single-play-singletask-task1") == "cube-single-play-v0"
    assert parity.reference_env_name("cube-single-play-singletask-task1") == "ogbench:cube-single-play-singletask-task1-v0"


def test_unfinished_runs_are_labelled_and_judged_where_both_sides_have_two_seeds(parity):
    behind = record("reference", 1, (0.3, 0.2, 0.1, 0.0), 6.0)
    behind["evaluations"] = behind["evaluations"][:2]  # stopped after the evaluation at 5000
    behind["complete"] = False
    records = [record("reference", 0, (0.5, 0.4, 0.2, 0.1), 5.0), behind,
               record("ours", 0, (0.5, 0.4, 0.2, 0.1), 7.0), record("ours", 1, (0.4, 0.4, 0.2, 0.1), 7.0)]
    text = parity.build_report(records)
    assert "Seeds: reference 0, 1 (unfinished: last evaluation at 5000); ours 0, 1." in text
    assert "**Verdict: INDISTINGUISHABLE within seed spread at step 5000 (every budget).**" in text
