"""`vgf demo`, the README's first command, end to end at a tiny size: both parts run, print their tables and write
their files."""

import json

from vgf.cli import main
from vgf.demo import BANDIT_BUDGETS, DEMO_SIZES, OGBENCH_BUDGETS, DemoSize


def test_demo_runs_both_parts_and_writes_its_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(DEMO_SIZES, "quick", DemoSize(bandit_steps=20, ogbench_episodes=1, ogbench_steps=2, eval_episodes=1))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Part A: contextual bandit" in printed and "Part B: VGF on cube-single task 1 after 2 CPU updates" in printed
    assert "Honest reading:" in printed

    summary = json.loads((out / "demo_summary.json").read_text())
    rows = summary["bandit"]["rows"]
    assert [(row["agent"], row["budget"]) for row in rows] == [("vgf", b) for b in BANDIT_BUDGETS] + [("bc", 0)]
    assert all(0.0 <= row["success"] <= 1.0 and row["distance_to_best"] >= 0.0 for row in rows)
    assert sorted(map(int, summary["ogbench"]["results"])) == list(OGBENCH_BUDGETS)
    for figure in (out / "bandit_particles.png", out / "cube-single-vgf" / "plots" / "budget_curve.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "data" / "cube-single-play-v0.npz").exists()
