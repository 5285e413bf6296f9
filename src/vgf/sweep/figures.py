"""PNG figures of a benchmark report: learning curves per task and hyperparameter sensitivity (matplotlib, Agg
canvas, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vgf.evaluation.plots import CURVE_LABELS
from vgf.files import atomic_file
from vgf.sweep.grid import format_value
from vgf.sweep.records import RunRecord, SensitivityPoint


def _figure(panels: int, width: float = 5.5, height: float = 4.0) -> tuple[Figure, list]:
    figure = Figure(figsize=(max(width * panels, 7.0), height), layout="constrained")  # room for the title
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, panels, k + 1) for k in range(panels)]


def _save(figure: Figure, path: Path) -> Path:
    with atomic_file(path) as handle:
        figure.savefig(handle, dpi=110, format="png")
    return path


def _seed_curve(runs: list[RunRecord], budget: int, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over seeds at the evaluation steps every seed has."""
    steps = sorted(set.intersection(*({e.step for e in run.evaluations[budget]} for run in runs)))
    values = np.asarray(
        [[getattr(e, metric) for e in run.evaluations[budget] if e.step in steps] for run in runs], dtype=np.float64
    )
    return np.asarray(steps), values.mean(axis=0), values.std(axis=0)


def _curve_label(name: str, choice: str, budget: int, seeds: int) -> str:
    budget_text = f"budget {budget}" if choice == "only" else f"{choice} budget {budget}"
    return f"{name} ({budget_text}, {seeds} seed{'' if seeds == 1 else 's'})"


def plot_learning_curves(lines: dict[str, tuple[list[tuple[str, int]], list[RunRecord]]], path: Path,
                         task: str) -> Path:
    """Score (success rate or D4RL normalised score) and return against step for one task: one colour per label
    (agent and setting), a line per (choice, budget) it is shown at in the table (the best budget dashed), mean
    over seeds with a ± std band."""
    figure, axes = _figure(2)
    metric_name = next(iter(lines.values()))[1][0].metric
    for ax, metric, label in zip(axes, ("score", "episode_return"), (CURVE_LABELS[metric_name], "return")):
        for index, (name, (budgets, runs)) in enumerate(lines.items()):
            color = f"C{index % 10}"
            for choice, budget in budgets:
                steps, mean, std = _seed_curve(runs, budget, metric)
                ax.plot(steps, mean, color=color, marker="o", markersize=3, linestyle="--" if choice == "best" else "-",
                        label=_curve_label(name, choice, budget, len(runs)))
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if metric == "score":
            if metric_name == "success":
                ax.set_ylim(-0.05, 1.05)
            ax.legend(fontsize=7)
    figure.suptitle(f"{task}: mean ± std over seeds")
    return _save(figure, path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sensitivity(points: list[SensitivityPoint], path: Path, hyperparameter: str) -> Path:
    """Last score against the values of one hyperparameter: a panel per task, a line per agent, error bars of
    one std over seeds and the other hyperparameters' settings."""
    tasks = sorted({p.task for p in points})
    figure, axes = _figure(len(tasks), width=4.5)
    numeric = all(_is_number(p.value) for p in points)
    categories = sorted({format_value(p.value) for p in points}) if not numeric else []
    for ax, task in zip(axes, tasks):
        for index, agent in enumerate(sorted({p.agent for p in points if p.task == task})):
            line = [p for p in points if p.task == task and p.agent == agent]
            x = [p.value if numeric else categories.index(format_value(p.value)) for p in line]
            ax.errorbar(x, [p.score_mean for p in line], yerr=[p.score_std for p in line], color=f"C{index % 10}",
                        marker="o", capsize=3, label=agent)
        values = sorted({p.value for p in points}) if numeric else None
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")  # grids of learning rates and the like span decades
        if not numeric:
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(hyperparameter)
        metric = next(p.metric for p in points if p.task == task)
        ax.set_ylabel(f"{CURVE_LABELS[metric]} (last evaluation)")
        if metric == "success":
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"sensitivity to {hyperparameter}: mean ± std over seeds and other settings")
    return _save(figure, path)

