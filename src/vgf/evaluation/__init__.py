"""Policy-agnostic evaluation: batched rollouts over transport budgets, and plots of the results.

The plotting helpers (:func:`plot_budget_curve`, :func:`plot_learning_curve`) live in :mod:`vgf.evaluation.plots`
and are imported lazily here, so importing this package does not import matplotlib.
"""

from __future__ import annotations

from typing import Any

from .rollout import EnvPool, EvalResults, PolicyFn, env_workers, evaluate, evaluate_sequential

__all__ = [
    "EnvPool",
    "EvalResults",
    "PolicyFn",
    "env_workers",
    "evaluate",
    "evaluate_sequential",
    "budget_grid",
    "plot_budget_curve",
    "plot_budget_heatmap",
    "plot_learning_curve",
]


def __getattr__(name: str) -> Any:
    if name in ("budget_grid", "plot_budget_curve", "plot_budget_heatmap", "plot_learning_curve"):
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
