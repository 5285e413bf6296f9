"""Divergence guard: a non-finite loss or parameter stops the run, names the loss and the step, keeps a good checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import pytest
from cli_runs import final_state, logged_step

from vgf.training import TrainingDiverged, list_checkpoints
from vgf.training.run import check_finite


@pytest.mark.slow
def test_huge_learning_rate_stops_with_exit_3_naming_loss_and_step(cli, background_runs):
    run_dir, process = background_runs["diverged"]  # trained with --set learning_rate=1e38
    code, out, err = cli.finish(process)

    assert code == 3, out + err
    assert "training diverged at step 10" in err
    assert "critic_loss=nan" in err or "critic_loss=inf" in err
    assert f"last good checkpoint (step 0): {run_dir / 'checkpoints' / 'step_000000000.msgpack'}" in err
    assert "Traceback" not in err
    # The good checkpoint is kept and loads with finite parameters; no non-finite row was logged.
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [0]
    step, leaves = final_state(run_dir)
    assert step == 0 and all(bool(jnp.isfinite(leaf).all()) for leaf in leaves if leaf.dtype.kind == "f")
    assert logged_step(run_dir) == 0


def test_non_finite_parameter_with_finite_loss_is_caught():
    kept = (40, Path("run/checkpoints/step_000000040.msgpack"))
    params = {"critic": jnp.array([1.0, jnp.inf]), "step": jnp.array(3)}
    with pytest.raises(TrainingDiverged, match=r"at step 50: a non-finite parameter in updates 41-50.*\(step 40\)"):
        check_finite({"critic_loss": 0.5}, params, 40, 50, kept)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(bc_flow_loss=nan\)"):
        check_finite({"critic_loss": 0.5, "bc_flow_loss": math.nan}, {"critic": jnp.ones(2)}, 40, 50, kept)
    check_finite({"critic_loss": 0.5}, {"critic": jnp.ones(2)}, 40, 50, kept)  # all finite: no error
