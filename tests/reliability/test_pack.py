"""A run stopped half-way, packed (`vgf bench --pack`), unpacked in another directory and resumed there ends exactly
where the uninterrupted run ends: what a study that outlives its machine relies on."""

from __future__ import annotations

import shutil
import signal

import pytest
from cli_runs import STEPS, resume_args, train_args, wait_for_step

from vgf.cli import main
from vgf.training import list_checkpoints


@pytest.mark.slow
def test_a_packed_run_resumes_elsewhere_and_matches_the_uninterrupted_run(cli, reference_run, assert_same_as_reference,
                                                                          tmp_path, capsys):
    results = tmp_path / "results"
    process = cli.start(train_args(results / "run"))
    wait_for_step(process, results / "run", STEPS // 2)
    process.send_signal(signal.SIGINT)
    assert cli.finish(process)[0] == 130
    kept = list_checkpoints(results / "run" / "checkpoints")
    assert len(kept) > 1  # the pack takes only the newest

    assert main(["bench", "--results-dir", str(results), "--pack", str(tmp_path / "pack")]) == 0
    assert f"packed run: checkpoint at step {kept[-1][0]:,}" in capsys.readouterr().out
    packed = tmp_path / "pack" / "run"
    assert [path.name for _, path in list_checkpoints(packed / "checkpoints")] == [kept[-1][1].name]
    assert sorted(path.name for path in packed.iterdir()) == ["checkpoints", "config.json", "metrics.csv", "metrics.jsonl"]  # no lock

    elsewhere = tmp_path / "elsewhere" / "run"
    shutil.copytree(packed, elsewhere)
    code, out, err = cli.run(resume_args(elsewhere))
    assert code == 0, out + err
    assert f"from step {kept[-1][0]}" in out
    assert_same_as_reference(elsewhere)


def test_packing_again_replaces_the_earlier_checkpoint_and_refuses_the_results_directory(tmp_path):
    from vgf.sweep.pack import pack_results

    run = tmp_path / "results" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "failure.json").write_text("{}")
    (run / "eval").mkdir()
    (run / "eval" / "budgets_step10.json").write_text("[]")
    (run / "checkpoints" / "step_000000010.msgpack").write_bytes(b"a")
    (tmp_path / "results" / "notes").mkdir()  # not a run: no config.json
    assert [(r.name, r.step) for r in pack_results(tmp_path / "results", tmp_path / "pack")] == [("run", 10)]

    (run / "failure.json").unlink()
    (run / "checkpoints" / "step_000000020.msgpack").write_bytes(b"bb")
    assert pack_results(tmp_path / "results", tmp_path / "pack")[0].bytes == len("{}") + len("[]") + 2
    assert sorted(str(p.relative_to(tmp_path / "pack" / "run")) for p in (tmp_path / "pack" / "run").rglob("*")) == \
        ["checkpoints", "checkpoints/step_000000020.msgpack", "config.json", "eval", "eval/budgets_step10.json"]
    assert not (tmp_path / "pack" / "notes").exists()
    with pytest.raises(ValueError, match="the results directory itself"):
        pack_results(tmp_path / "results", tmp_path / "results")
