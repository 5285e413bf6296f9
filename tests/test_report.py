"""The benchmark report (`vgf.sweep.report`) on run directories written by hand: exact numbers in results.csv and
results.md, budget choices, runs left out of the table, sensitivity to a swept hyperparameter. No training."""

from __future__ import annotations

import csv
import json

import pytest

from vgf.cli import main
from vgf.sweep import write_report
from vgf.sweep.report import collect_runs


def fake_run(results_dir, agent, seed, evaluations, steps=100, overrides=None, default_budget=8, task="bandit", name=None,
             metric="success", agent_config=None, data_sha256=None):
    """A run directory as `train` leaves it. `evaluations`: {step: {budget: score}}, written as `metric` (success,
    or normalized_score as D4RL locomotion runs have it, without success); the return is 10 x score."""
    overrides = overrides or {}
    run_dir = results_dir / (name or f"{agent}-{task}-s{seed}" + "".join(f"-{k}={v}" for k, v in overrides.items()))
    run_dir.mkdir(parents=True)
    if agent_config is None:
        agent_config = {"eval_vgf_steps": default_budget} if agent == "vgf" else {"bc_flow_steps": 8}
    config = {"settings": {"agent": agent, "task": task, "seed": seed, "steps": steps, "overrides": overrides}, "agent_config": agent_config}
    if data_sha256 is not None:
        config["dataset"] = {"source": "data.npz", "transitions": 100, "sha256": data_sha256}
    (run_dir / "config.json").write_text(json.dumps(config))
    rows = []
    for step, by_budget in sorted(evaluations.items()):
        rows.append({"step": step - 10, "train/critic_loss": 0.5})  # a training-only row
        row = {"step": step, "train/critic_loss": 0.4}
        for budget, score in by_budget.items():
            row.update({f"eval/budget_{budget}/{metric}": score, f"eval/budget_{budget}/return": 10 * score,
                        f"eval/budget_{budget}/displacement": 0.1 * budget})
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir


@pytest.fixture
def bench_dir(tmp_path):
    """vgf and bc on the bandit, two seeds each, plus a failed run and an unfinished one."""
    fake_run(tmp_path, "vgf", 0, {50: {0: 0.2, 2: 0.4, 8: 0.5}, 100: {0: 0.3, 2: 0.9, 8: 0.6}})
    fake_run(tmp_path, "vgf", 1, {50: {0: 0.1, 2: 0.6, 8: 0.7}, 100: {0: 0.1, 2: 0.7, 8: 0.4}})
    fake_run(tmp_path, "bc", 0, {50: {0: 0.6}, 100: {0: 0.5}})
    fake_run(tmp_path, "bc", 1, {50: {0: 0.3}, 100: {0: 0.3}})
    fake_run(tmp_path, "bc", 2, {50: {0: 0.3}}, steps=200)
    failed = tmp_path / "vgf-cube-single-play-singletask-task1-s0"
    failed.mkdir()
    attempts = [{"attempt": n, "error": "DatasetError: no dataset file", "traceback": "..."} for n in (1, 2)]
    (failed / "failure.json").write_text(json.dumps({"run": failed.name, "attempts": attempts}))
    return tmp_path


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_table_has_mean_and_std_over_seeds_at_default_and_best_budget(bench_dir):
    report = write_report(bench_dir)
    rows = {(r["agent"], r["budget_choice"]): r for r in read_csv(bench_dir / "results.csv")}
    assert set(rows) == {("bc", "only"), ("vgf", "default"), ("vgf", "best")}

    default = rows[("vgf", "default")]  # budget 8: last 0.6 and 0.4, best evaluations 0.6 and 0.7
    assert (default["budget"], default["seeds"], default["steps"]) == ("8", "2", "100")
    assert float(default["score_last_mean"]) == pytest.approx(0.5)
    assert float(default["score_last_std"]) == pytest.approx(0.1)
    assert float(default["score_best_mean"]) == pytest.approx(0.65)
    assert float(default["score_best_std"]) == pytest.approx(0.05)
    assert float(default["return_last_mean"]) == pytest.approx(5.0)

    best = rows[("vgf", "best")]  # mean last success: budget 0 -> 0.2, 2 -> 0.8, 8 -> 0.5
    assert best["budget"] == "2"
    assert float(best["score_last_mean"]) == pytest.approx(0.8)
    assert float(best["score_last_std"]) == pytest.approx(0.1)

    bc = rows[("bc", "only")]  # the unfinished seed 2 is left out
    assert (bc["budget"], bc["seeds"]) == ("0", "2")
    assert float(bc["score_last_mean"]) == pytest.approx(0.4)
    assert float(bc["score_best_mean"]) == pytest.approx(0.45)
    assert float(bc["score_best_std"]) == pytest.approx(0.15)

    markdown = (bench_dir / "results.md").read_text()
    assert "| vgf | default: 8 | 2 | 100 | 0.500 ± 0.100 | 0.650 ± 0.050 | 5.000 ± 1.000 |" in markdown
    assert "| vgf | best: 2 | 2 | 100 | 0.800 ± 0.100 | 0.800 ± 0.100 | 8.000 ± 1.000 |" in markdown
    assert "| bc | 0 | 2 | 100 | 0.400 ± 0.100 | 0.450 ± 0.150 | 4.000 ± 1.000 |" in markdown
    # every budget's last score, per seed too; BC has one budget and no curve
    assert ("| vgf | 2 | 100 | 0.200 ± 0.100 (0.30, 0.10) | 0.800 ± 0.100 (0.90, 0.70) | 0.500 ± 0.100 (0.60, 0.40) |"
            in markdown)
    assert "| bc | 2 |" not in markdown
    assert "`vgf-cube-single-play-singletask-task1-s0`: failed after 2 attempt(s): DatasetError: no dataset file" in markdown
    assert "`bc-bandit-s2`: unfinished: evaluated up to step 50 of 200" in markdown
    assert [p.name for p in report.problems] == ["bc-bandit-s2", "vgf-cube-single-play-singletask-task1-s0"]
    assert (bench_dir / "plots" / "learning_curves_bandit.png").stat().st_size > 0
    assert not (bench_dir / "sensitivity.csv").exists()  # nothing was swept


@pytest.fixture
def drawn(monkeypatch):
    """The report's figures by file name, kept instead of saved."""
    from vgf.sweep import figures

    figures_by_name = {}

    def keep(figure, path):
        figures_by_name[path.name] = figure
        return path

    monkeypatch.setattr(figures, "_save", keep)
    return figures_by_name


def test_learning_curves_draw_budget_agents_at_default_and_best_budget(bench_dir, drawn):
    write_report(bench_dir)
    score_axis = drawn["learning_curves_bandit.png"].axes[0]
    lines = {line.get_label(): (line.get_linestyle(), list(line.get_ydata())) for line in score_axis.get_lines()}
    assert lines == {
        "vgf (default budget 8, 2 seeds)": ("-", pytest.approx([0.6, 0.5])),
        "vgf (best budget 2, 2 seeds)": ("--", pytest.approx([0.5, 0.8])),
        "bc (budget 0, 2 seeds)": ("-", pytest.approx([0.45, 0.4])),
    }


def test_learning_curve_draws_a_budget_once_when_it_is_default_and_best(tmp_path, drawn):
    fake_run(tmp_path, "vgf", 0, {100: {0: 0.2, 8: 0.6}}, default_budget=8)
    write_report(tmp_path)
    labels = [line.get_label() for line in drawn["learning_curves_bandit.png"].axes[0].get_lines()]
    assert labels == ["vgf (default budget 8, 1 seed)"]


def test_best_budget_ties_go_to_higher_return_then_smaller_budget(tmp_path):
    fake_run(tmp_path, "vgf", 0, {100: {0: 0.0, 1: 0.0, 4: 0.0, 8: 0.0}}, default_budget=8)
    run = tmp_path / "vgf-bandit-s0" / "metrics.jsonl"
    row = json.loads(run.read_text().splitlines()[1])
    row.update({"eval/budget_1/return": 3.0, "eval/budget_4/return": 3.0})
    run.write_text(json.dumps(row) + "\n")
    write_report(tmp_path)
    rows = {r["budget_choice"]: r["budget"] for r in read_csv(tmp_path / "results.csv")}
    assert rows == {"default": "8", "best": "1"}


def test_default_budget_not_evaluated_leaves_only_the_best_row(tmp_path):
    fake_run(tmp_path, "vgf", 0, {100: {0: 0.2, 4: 0.6}}, default_budget=8)
    write_report(tmp_path)
    assert [(r["budget_choice"], r["budget"]) for r in read_csv(tmp_path / "results.csv")] == [("best", "4")]


def test_sensitivity_averages_over_seeds_and_other_settings(tmp_path):
    # vgf_alpha 0.1 -> default-budget last success 0.2, 0.4 (particles 8) and 0.6 (particles 16); 0.5 -> 0.9, 0.7
    for seed, alpha, particles, success in [(0, 0.1, 8, 0.2), (1, 0.1, 8, 0.4), (0, 0.1, 16, 0.6), (0, 0.5, 8, 0.9), (1, 0.5, 8, 0.7)]:
        overrides = {"num_particles": particles, "vgf_alpha": alpha}
        fake_run(tmp_path, "vgf", seed, {100: {0: 0.0, 8: success}}, overrides=overrides)
    fake_run(tmp_path, "bc", 0, {100: {0: 0.5}})
    report = write_report(tmp_path)

    points = {(p["hyperparameter"], p["agent"], p["value"]): p for p in read_csv(tmp_path / "sensitivity.csv")}
    assert set(points) == {("num_particles", "vgf", "8"), ("num_particles", "vgf", "16"), ("vgf_alpha", "vgf", "0.1"), ("vgf_alpha", "vgf", "0.5")}
    low = points[("vgf_alpha", "vgf", "0.1")]
    assert low["runs"] == "3"
    assert float(low["score_mean"]) == pytest.approx(0.4)
    assert float(low["score_std"]) == pytest.approx(0.163299, abs=1e-6)
    assert float(points[("vgf_alpha", "vgf", "0.5")]["score_mean"]) == pytest.approx(0.8)
    assert float(points[("num_particles", "vgf", "8")]["score_mean"]) == pytest.approx(0.55)

    settings = {r["setting"] for r in read_csv(tmp_path / "results.csv") if r["agent"] == "vgf"}
    assert settings == {"num_particles=8 vgf_alpha=0.1", "num_particles=16 vgf_alpha=0.1", "num_particles=8 vgf_alpha=0.5"}
    assert "| vgf | num_particles=8 vgf_alpha=0.5 | default: 8 | 2 | 100 | 0.800 ± 0.100 |" in (tmp_path / "results.md").read_text()
    for name in ("sensitivity_vgf_alpha.png", "sensitivity_num_particles.png", "learning_curves_bandit.png"):
        assert (tmp_path / "plots" / name) in report.files and (tmp_path / "plots" / name).stat().st_size > 0


def test_d4rl_runs_are_scored_by_normalized_score(tmp_path):
    task = "d4rl:hopper-medium-v2"
    fake_run(tmp_path, "vgf", 0, {50: {0: 40.0, 5: 50.0}, 100: {0: 45.0, 5: 62.0}}, task=task, default_budget=5, metric="normalized_score")
    fake_run(tmp_path, "vgf", 1, {50: {0: 42.0, 5: 48.0}, 100: {0: 47.0, 5: 58.0}}, task=task, default_budget=5, metric="normalized_score")
    fake_run(tmp_path, "bc", 0, {100: {0: 44.0}}, task=task, metric="normalized_score")
    report = write_report(tmp_path)
    assert report.problems == []
    rows = {(r["agent"], r["budget_choice"]): r for r in read_csv(tmp_path / "results.csv")}
    assert set(rows) == {("bc", "only"), ("vgf", "default"), ("vgf", "best")}
    assert rows[("vgf", "default")]["metric"] == "normalized_score"
    assert float(rows[("vgf", "default")]["score_last_mean"]) == pytest.approx(60.0)
    assert float(rows[("vgf", "default")]["score_best_std"]) == pytest.approx(2.0)
    markdown = (tmp_path / "results.md").read_text()
    assert "normalized score (last)" in markdown and "success (last)" not in markdown
    assert "| vgf | default: 5 | 2 | 100 | 60.000 ± 2.000 | 60.000 ± 2.000 | 600.000 ± 20.000 |" in markdown


def test_runs_trained_under_different_agent_defaults_never_share_a_row(tmp_path, capsys):
    # IQL before its `activation` field existed trained with ReLU (iql.LEGACY_VALUES): such a run pools with one that
    # names relu, and is kept apart from GELU runs, each row labelled with the values that differ.
    fake_run(tmp_path, "iql", 0, {100: {0: 0.2}}, agent_config={"expectile": 0.9}, name="old-s0")
    fake_run(tmp_path, "iql", 1, {100: {0: 0.4}}, agent_config={"expectile": 0.9, "activation": "relu"}, name="old-s1")
    fake_run(tmp_path, "iql", 0, {100: {0: 0.6}}, agent_config={"expectile": 0.9, "activation": "gelu"}, name="new-s0")
    fake_run(tmp_path, "iql", 1, {100: {0: 0.8}}, agent_config={"expectile": 0.9, "activation": "gelu"}, name="new-s1")
    fake_run(tmp_path, "bc", 0, {100: {0: 0.5}})
    report = write_report(tmp_path)

    rows = {r["setting"]: r for r in read_csv(tmp_path / "results.csv") if r["agent"] == "iql"}
    assert set(rows) == {"[activation=relu]", "[activation=gelu]"}
    assert float(rows["[activation=relu]"]["score_last_mean"]) == pytest.approx(0.3)
    assert float(rows["[activation=gelu]"]["score_last_mean"]) == pytest.approx(0.7)
    assert [row.setting for row in report.rows if row.agent == "bc"] == [""]  # nothing to split: no label
    assert report.notes == ["iql on bandit: runs trained under different agent settings or data, one row each: "
                            "[activation=gelu]: 2 run(s) (new-s0, new-s1); [activation=relu]: 2 run(s) (old-s0, old-s1)"]
    assert "## Rows split by agent settings" in (tmp_path / "results.md").read_text()
    assert main(["bench", "--report", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[activation=relu]" in out and "rows split:" in out


def test_runs_on_different_data_never_share_a_row_and_the_task_says_so(tmp_path, capsys):
    # Two seeds of IQL on one data file, a third on the file remade elsewhere (other bytes), BC on the first file,
    # and a run from before digests were kept: the IQL row splits by data, and the task names every data set.
    first, remade = "a" * 64, "b" * 64
    fake_run(tmp_path, "iql", 0, {100: {0: 0.2}}, data_sha256=first)
    fake_run(tmp_path, "iql", 1, {100: {0: 0.4}}, data_sha256=first)
    fake_run(tmp_path, "iql", 2, {100: {0: 0.9}}, data_sha256=remade)
    fake_run(tmp_path, "bc", 0, {100: {0: 0.5}}, data_sha256=first)
    fake_run(tmp_path, "bc", 1, {100: {0: 0.5}})
    report = write_report(tmp_path)

    rows = {(r["agent"], r["setting"]): r for r in read_csv(tmp_path / "results.csv")}
    assert set(rows) == {("iql", "[data=aaaaaaaaaaaa]"), ("iql", "[data=bbbbbbbbbbbb]"), ("bc", "[data=(unrecorded)]"),
                         ("bc", "[data=aaaaaaaaaaaa]")}
    assert float(rows[("iql", "[data=aaaaaaaaaaaa]")]["score_last_mean"]) == pytest.approx(0.3)
    assert report.data == ["bandit: runs trained on 3 different data sets (content sha256): data=(unrecorded): bc-bandit-s1; "
                           "data=aaaaaaaaaaaa: bc-bandit-s0, iql-bandit-s0, iql-bandit-s1; data=bbbbbbbbbbbb: iql-bandit-s2"]
    assert "## Tasks whose rows trained on different data" in (tmp_path / "results.md").read_text()
    assert main(["bench", "--report", "--results-dir", str(tmp_path)]) == 0
    assert "data differs:" in capsys.readouterr().out


def test_runs_on_one_data_set_are_neither_split_nor_noted(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, "iql", seed, {100: {0: 0.2}}, data_sha256="a" * 64)
    report = write_report(tmp_path)
    assert [row.setting for row in report.rows] == [""] and report.notes == report.data == []


def test_a_config_the_agent_cannot_read_is_listed_not_pooled(tmp_path):
    fake_run(tmp_path, "iql", 0, {100: {0: 0.2}}, agent_config={"expectile": "high"})
    report = write_report(tmp_path)
    assert report.rows == [] and "agent_config in config.json" in report.problems[0].reason


def test_collect_runs_skips_folders_that_are_not_runs(tmp_path):
    fake_run(tmp_path, "bc", 0, {100: {0: 0.5}})
    (tmp_path / "plots").mkdir()
    (tmp_path / "notes").mkdir()
    records, problems = collect_runs(tmp_path)
    assert [r.name for r in records] == ["bc-bandit-s0"] and problems == []


def test_unreadable_run_is_listed_not_fatal(tmp_path):
    fake_run(tmp_path, "bc", 0, {100: {0: 0.5}})
    (tmp_path / "bc-bandit-s1").mkdir()
    (tmp_path / "bc-bandit-s1" / "config.json").write_text("{not json")
    report = write_report(tmp_path)
    assert [row.agent for row in report.rows] == ["bc"]
    assert report.problems[0].name == "bc-bandit-s1" and "unreadable run files" in report.problems[0].reason


def test_cli_report_rebuilds_table_without_training(bench_dir, capsys):
    assert main(["bench", "--report", "--results-dir", str(bench_dir)]) == 1  # a run failed and one is unfinished
    out = capsys.readouterr().out
    assert "0.50 ± 0.10" in out and "not in the table" in out
    assert (bench_dir / "results.csv").exists()


def test_report_of_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["sweep", "--report", "--results-dir", str(tmp_path / "nope")]) == 2
    assert "results directory" in capsys.readouterr().err
