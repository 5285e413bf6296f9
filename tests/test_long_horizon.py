"""The long-horizon study's script (benchmarks/long_horizon.py) on a tiny bandit run: re-evaluating kept checkpoints
once each, and the report over training and budgets."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
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


def test_every_kept_checkpoint_is_evaluated_once_and_reported(study, tmp_path, capsys, monkeypatch):
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

    # the last checkpoints again, with more episodes from other initial states, then step 10 too
    assert study.main(["confirm", str(results), "--episodes", "30", "--seed", "100"]) == 0
    assert "2 evaluation(s) written, 0 failed, 0 checkpoint(s) not reached or not kept" in capsys.readouterr().out
    last = json.loads((results / "vgf-s1" / "eval" / "budgets_step20-seed101.json").read_text())
    assert (last["step"], last["episodes"]) == (20, 30)
    outcomes = {b: last["results"][str(b)]["per_episode"]["success"] for b in (0, 8)}
    bc_outcomes = json.loads((results / "bc-s1" / "eval" / "budgets_step20-seed101.json").read_text())[
        "results"]["0"]["per_episode"]["success"]
    assert study.main(["confirm", str(results), "--episodes", "30", "--seed", "100", "--steps", "10,15,20"]) == 0
    assert "2 evaluation(s) written, 0 failed, 2 checkpoint(s) not reached or not kept" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--episodes and --seed must be positive"):
        study.main(["confirm", str(results), "--seed", "0"])

    # the probe: the bandit has no validation split, so it probes on its training data here
    with pytest.raises(ValueError, match="bandit has no validation split to probe the transport on"):
        study.main(["probe", str(results)])
    monkeypatch.setattr(study, "load_task_datasets", lambda task, data_dir: (None, make_bandit_dataset(seed=7)))
    assert study.main(["probe", str(results), "--states", "256"]) == 0
    assert "2 probe(s) written" in capsys.readouterr().out  # VGF's steps 10 and 20; BC has no budgets
    probed = json.loads((results / "vgf-s1" / "eval" / "probe_step20.json").read_text())
    assert probed["states"] == 256 and probed["results"]["0"]["displacement"] == 0.0
    assert probed["results"]["8"]["displacement"] > 0.01 and probed["results"]["8"]["q"] > probed["results"]["0"]["q"]

    # the placebo: the same episodes, the transport in random directions; budget 0 does not move, so it is unchanged
    assert study.main(["placebo", str(results), "--episodes", "30", "--seed", "100"]) == 0
    assert "1 placebo evaluation(s) written" in capsys.readouterr().out  # VGF only
    blind = json.loads((results / "vgf-s1" / "eval" / "budgets_step20-seed101-transport=random.json").read_text())
    assert blind["results"]["0"]["per_episode"] == last["results"]["0"]["per_episode"]
    assert blind["results"]["8"]["displacement"] > 0.01
    assert blind["results"]["8"]["per_episode"] != last["results"]["8"]["per_episode"]
    # with a changed setting, the placebo pairs with `confirm`'s evaluation at that setting
    for command in ("confirm", "placebo"):
        assert study.main([command, str(results), "--episodes", "30", "--seed", "100", "--set", "vgf_lr=0.1"]) == 0
    assert "1 placebo evaluation(s) written" in capsys.readouterr().out
    small = json.loads((results / "vgf-s1" / "eval" / "budgets_step20-seed101-vgf_lr=0.1.json").read_text())
    small_blind = json.loads((results / "vgf-s1" / "eval" / "budgets_step20-seed101-vgf_lr=0.1-transport=random.json")
                             .read_text())
    assert small_blind["test_time_settings"] == {"vgf_lr": 0.1, "transport": "random"}
    assert small_blind["results"]["0"]["per_episode"] == small["results"]["0"]["per_episode"]

    out = tmp_path / "report"
    assert study.main(["report", str(results), str(out)]) == 0
    text = (out / "report.md").read_text()
    at = probed["results"]
    assert (f"| 20 | trained | {at['data']['q']:.2f} | {at['0']['q']:.2f} | {at['8']['q']:.2f} | "
            f"{at['data']['q_std']:.2f} |") in text
    assert "## Again with more episodes\n" in text and "| 10 | vgf | 1 | trained | 30 |" in text
    assert "| 20 | vgf | 1 | transport=random | 30 |" in text and "| 20 | vgf budget 8 | vgf budget 0 | transport=random |" in text
    along = np.asarray(last["results"]["8"]["per_episode"]["success"], bool)  # the critic's gradient, then random
    across = np.asarray(blind["results"]["8"]["per_episode"]["success"], bool)
    assert (f"| 20 | vgf budget 8, trained | vgf budget 8 | transport=random | 1 | {np.sum(along & ~across)} | "
            f"{np.sum(~along & across)} | {np.sum(along & across)} |") in text
    along = np.asarray(small["results"]["8"]["per_episode"]["success"], bool)
    across = np.asarray(small_blind["results"]["8"]["per_episode"]["success"], bool)
    assert (f"| 20 | vgf budget 8, vgf_lr=0.1 | vgf budget 8 | transport=random vgf_lr=0.1 | 1 | "
            f"{np.sum(along & ~across)} | {np.sum(~along & across)} |") in text
    p0, p8 = (sum(outcomes[b]) / 30 for b in (0, 8))
    assert f"| 20 | vgf | 1 | trained | 30 | {p0:.2f} ± {(p0 * (1 - p0) / 30) ** 0.5:.2f} | {p8:.2f} ± " in text
    solved = [n for x, n in zip(outcomes[0], last["results"]["0"]["per_episode"]["length"]) if x]  # one-step episodes
    assert f"| 20 | vgf | 1 | trained | 30 | {sum(solved) / len(solved):.0f} ({len(solved)}) |" in text
    wins = sum(a > b for a, b in zip(outcomes[8], outcomes[0]))
    losses = sum(a < b for a, b in zip(outcomes[8], outcomes[0]))
    assert f"| 20 | vgf budget 8 | vgf budget 0 | trained | 1 | {wins} | {losses} |" in text
    gains = np.subtract(*(last["results"][b]["per_episode"]["discounted_return"] for b in ("8", "0")))
    row = next(line for line in text.splitlines() if line.startswith("| 20 | vgf budget 8 | vgf budget 0 |"))
    expected = np.subtract(*(last["results"][b]["per_episode"]["q_start"] for b in ("8", "0")))
    assert row.endswith(f"| {gains.mean():.1f} ± {gains.std(ddof=1) / 30 ** 0.5:.1f} | "
                        f"{expected.mean():.1f} ± {expected.std(ddof=1) / 30 ** 0.5:.1f} | - |")  # one seed
    assert next(line for line in text.splitlines() if line.startswith("| 20 | vgf budget 0 | bc |")).endswith(
        " | - | - |")
    # with two seeds the last column gives each seed's difference, which the pooled one can hide
    pairs = [(1, {"r": [3.0, 5.0]}, {"r": [0.0, 0.0]}), (0, {"r": [-4.0, -2.0]}, {"r": [0.0, 0.0]})]
    assert study.paired_difference(pairs, "r") == "0.5 ± 2.1"
    assert study.per_seed_difference(pairs, "r") == "0: -3.0 ± 1.0; 1: 4.0 ± 1.0"
    assert study.per_seed_difference(pairs[:1], "r") == "-"
    wins = sum(a > b for a, b in zip(outcomes[0], bc_outcomes))
    assert f"| 20 | vgf budget 0 | bc | trained | 1 | {wins} |" in text
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
    assert (study.sign_test(0, 0), study.sign_test(5, 0), study.sign_test(3, 3)) == (1.0, 2 / 32, 1.0)

    other = results / "vgf-other-task"  # another task's run in the same directory would be averaged with this one's
    other.mkdir()
    info = json.loads((results / "vgf-s1" / "config.json").read_text())
    info["settings"]["task"] = "cube-single-play-singletask-task1"
    (other / "config.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="several tasks .*: report one task per directory"):
        study.main(["report", str(results), str(out)])
