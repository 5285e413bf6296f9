"""Grids of training runs on Ray, and the benchmark report over their run directories.

`grid` expands `vgf bench` flags or a sweep YAML file into validated `RunSpec`s, `runner.run_grid` trains them as
Ray tasks (skipping finished runs, retrying failed ones), and `report.write_report` turns a results directory into
results.md, results.csv and plots. The runner is imported lazily, so reports need no Ray.
"""

from __future__ import annotations

from typing import Any

from vgf.sweep.grid import Grid, GridError, Resources, RunSpec, SweepConfig, load_sweep, parse_sweep
from vgf.sweep.report import Report, collect_runs, score_rows, write_report

_RUNNER_NAMES = ("RunState", "RunStatus", "run_grid")

__all__ = [
    "Grid",
    "GridError",
    "Report",
    "Resources",
    "RunSpec",
    "SweepConfig",
    "collect_runs",
    "load_sweep",
    "parse_sweep",
    "score_rows",
    "write_report",
    *_RUNNER_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _RUNNER_NAMES:
        from vgf.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
