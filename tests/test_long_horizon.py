"""The long-horizon study's script (benchmarks/long_horizon.py) on a tiny bandit run: re-evaluating kept checkpoints
once each, and the report over training and budgets."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vgf.data import make_bandit_dataset
from vgf.training import TrainSettings, list_checkpoints, train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "long_horizon.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("long_horizon", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_kept_checkpoint_is_evaluated_once_and_reported(study, tmp_path, capsys):
    results = tmp_path / "results"
    for agent in ("vgf", "bc"):  # the study's checkpointing: often for resuming, the evaluation steps kept
        train(TrainSettings(agent=agent, task="bandit", preset="bandit", run_dir=str(results / f"{agent}-s1"),
                            seed=1, steps=20, eval_every=10, log_every=5, eval_episodes=20, eval_budgets=(0, 8),
                            checkpoint_every=5, keep_checkpoints=1, keep_every=10), dataset=make_bandit_dataset())
    assert [step for step, _ in list_checkpoints(results / "vgf-s1" / "checkpoints")] == [0, 10, 20]
    assert study.main(["evaluate", str(results), "--set", "vgf_lr=0"]) == 0
    written = sorted(path.name for path in (results / "vgf-s1" / "eval").iterdir())
    assert written == ["budgets_step10-seed1-vgf_lr=0.0.json", "budgets_step20-seed1-vgf_lr=0.0.json"]  # not step 0, not BC
    record = json.loads((results / "vgf-s1" / "eval" / "budgets_step10-seed1-vgf_lr=0.0.json").read_text())
    assert (record["seed"], record["step"], record["episodes"]) == (1, 10, 20)
    assert record["results"]["8"]["displacement"] == 0.0
    capsys.readouterr()
    assert study.main(["evaluate", str(results), "--set", "vgf_lr=0.0"]) == 0  # the same setting, spelt otherwise
    assert "0 evaluation(s) written" in capsys.readouterr().out
    # without --set: every agent with its trained settings, repeating the evaluation made while training
    assert study.main(["evaluate", str(results)]) == 0
    assert "4 evaluation(s) written" in capsys.readouterr().out
    assert (results / "bc-s1" / "eval" / "budgets_step20-seed1.json").exists()
    again = json.loads((results / "vgf-s1" / "eval" / "budgets_step20-seed1.json").read_text())["results"]
    trained = [json.loads(line) for line in (results / "vgf-s1" / "metrics.jsonl").read_text().splitlines()]
    at_20 = next(row for row in trained if row["step"] == 20)
    assert [again[b]["success"] for b in ("0", "8")] == [at_20["eval/budget_0/success"], at_20["eval/budget_8/success"]]

    out = tmp_path / "report"
    assert study.main(["report", str(results), str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| vgf-s1 | 20 | 20 | 20 |" in text
    assert "## VGF: success over updates x budget, vgf_lr 0.0\n" in text
    assert f"| 20 | {at_20['eval/budget_0/success']:.2f} | {at_20['eval/budget_8/success']:.2f} |" in text
    # the value error table: VGF at budgets 0 and 8, trained and at vgf_lr 0; BC has no critic
    assert "| updates | vgf budget 0 | vgf budget 8 | vgf budget 0, vgf_lr=0.0 | vgf budget 8, vgf_lr=0.0 |" in text
    errors = [again[b]["q_start"] - again[b]["discounted_return"] for b in ("0", "8")]
    assert f"| 20 | {errors[0]:.2f} | {errors[1]:.2f} |" in text
    for figure in ("learning_curves.png", "budget_heatmap.png", "critic_health.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.startswith("# Long-horizon study: bandit\n")

    other = results / "vgf-other-task"  # another task's run in the same directory would be averaged with this one's
    other.mkdir()
    info = json.loads((results / "vgf-s1" / "config.json").read_text())
    info["settings"]["task"] = "cube-single-play-singletask-task1"
    (other / "config.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="several tasks .*: report one task per directory"):
        study.main(["report", str(results), str(out)])
