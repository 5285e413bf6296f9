"""PNG plots of evaluation results (matplotlib, Agg canvas; no global backend switch, no display needed)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vgf.files import atomic_file

_SUCCESS_COLOR = "tab:blue"
_RETURN_COLOR = "tab:orange"
_DISPLACEMENT_COLOR = "tab:green"
CURVE_LABELS = {"success": "success rate", "return": "return", "normalized_score": "D4RL normalized score"}
_EVAL_KEY = re.compile(r"^eval/budget_(?P<budget>\d+)/(?P<metric>[^/]+)$")


def _new_figure(ncols: int, width_per_panel: float = 5.0, height: float = 3.8) -> tuple[Figure, list]:
    fig = Figure(figsize=(width_per_panel * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, axes


def _save(fig: Figure, path) -> Path:
    out = Path(path)
    with atomic_file(out) as handle:
        fig.savefig(handle, dpi=120, format="png")
    return out


def _budget_axis(ax, budgets: list[int]) -> None:
    """Budgets usually double (0, 1, 2, 4, ...): use a base-2 symlog axis for wide ranges, ticks at the budgets."""
    if len(budgets) > 2 and max(budgets) >= 8:
        ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("transport budget (steps)")
    ax.grid(alpha=0.3)


def _values(results: Mapping[int, Mapping[str, float]], budgets: list[int], key: str) -> np.ndarray | None:
    if not all(key in results[b] for b in budgets):
        return None
    return np.asarray([results[b][key] for b in budgets], dtype=np.float64)


def _error(results: Mapping[int, Mapping[str, float]], budgets: list[int], key: str) -> np.ndarray | None:
    """Standard error of the mean from ``{key}_std`` and ``'episodes'`` (the plain std when episodes is absent)."""
    std = _values(results, budgets, f"{key}_std")
    if std is None:
        return None
    episodes = _values(results, budgets, "episodes")
    return std / np.sqrt(np.maximum(episodes, 1.0)) if episodes is not None else std


def plot_budget_curve(results: Mapping[int, Mapping[str, float]], path, title: str = "") -> Path:
    """Success rate (left axis) and return (right axis) against the transport budget.

    Error bars are one standard error of the mean, from ``success_std`` / ``return_std`` and ``episodes`` (the
    plain std when ``episodes`` is missing; none when the ``*_std`` keys are missing).

    A second panel shows the mean ``'displacement'`` aux value per budget when the results have it.
    Returns the PNG path.
    """
    if not results:
        raise ValueError("results is empty")
    budgets = sorted(int(b) for b in results)
    results = {int(b): v for b, v in results.items()}
    displacement = _values(results, budgets, "displacement")
    fig, axes = _new_figure(2 if displacement is not None else 1)

    ax = axes[0]
    success = _values(results, budgets, "success")
    if success is not None:
        ax.errorbar(budgets, success, yerr=_error(results, budgets, "success"), color=_SUCCESS_COLOR,
                    marker="o", capsize=3, label="success")
        ax.set_ylabel("success rate", color=_SUCCESS_COLOR)
        ax.set_ylim(-0.05, 1.05)
    returns = _values(results, budgets, "return")
    if returns is not None:
        ax_r = ax.twinx()
        ax_r.errorbar(budgets, returns, yerr=_error(results, budgets, "return"), color=_RETURN_COLOR,
                      marker="s", linestyle="--", capsize=3, label="return")
        ax_r.set_ylabel("return", color=_RETURN_COLOR)
    _budget_axis(ax, budgets)
    ax.set_title(title or "evaluation vs transport budget")

    if displacement is not None:
        ax_d = axes[1]
        ax_d.plot(budgets, displacement, color=_DISPLACEMENT_COLOR, marker="^")
        ax_d.set_ylabel("mean displacement from reference")
        _budget_axis(ax_d, budgets)
        ax_d.set_title("action displacement")
    return _save(fig, path)


def _budget_label(key) -> int:
    """Accept 4, '4', 'budget_4', 'eval/budget_4' or 'eval/budget_4/success' and return 4."""
    text = str(key)
    match = re.search(r"(?:^|budget_)(\d+)(?:/|$)", text.removeprefix("eval/"))
    if match is None:
        raise ValueError(f"cannot read a budget from {key!r}")
    return int(match.group(1))


def _sem(std, episodes):
    if std is None:
        return None
    return float(std) / math.sqrt(max(float(episodes), 1.0)) if episodes is not None else float(std)


def plot_learning_curve(
    rows: Sequence[Mapping[str, float]],
    path,
    title: str = "",
    budget_keys: Sequence[str] | None = None,
    marker_step: int | None = None,
) -> Path:
    """Success, return and D4RL normalised score against training step, one line per budget, from metric rows.

    ``rows`` are dicts with a ``'step'`` key and evaluation keys ``'eval/budget_{k}/success'``,
    ``'eval/budget_{k}/return'`` and ``'eval/budget_{k}/normalized_score'`` (rows without them, e.g. training-only
    rows, are skipped per line). A panel is drawn per metric the rows have: no success panel for envs that report no
    success (MuJoCo locomotion), a normalised-score panel only for D4RL tasks. A shaded band of
    one standard error is drawn when every point has ``'eval/budget_{k}/success_std'`` / ``'.../return_std'``
    (divided by the square root of ``'eval/budget_{k}/episodes'`` when that key is present). ``budget_keys`` picks
    the budgets to draw (``4``, ``'4'``, ``'budget_4'`` and ``'eval/budget_4'`` all mean budget 4); by default all
    found. ``marker_step`` draws a vertical dashed line there (e.g. the offline-to-online switch). Returns the path.
    """
    found: set[int] = set()
    found_metrics: set[str] = set()
    for row in rows:
        for key in row:
            match = _EVAL_KEY.match(key)
            if match and match.group("metric") in CURVE_LABELS:
                found.add(int(match.group("budget")))
                found_metrics.add(match.group("metric"))
    budgets = sorted(found) if budget_keys is None else [_budget_label(k) for k in budget_keys]
    metrics = [metric for metric in CURVE_LABELS if metric in found_metrics] or ["success", "return"]
    fig, axes = _new_figure(len(metrics))
    colors = [f"C{k % 10}" for k in range(len(budgets))]
    for ax, metric in zip(axes, metrics):
        for budget, color in zip(budgets, colors):
            key = f"eval/budget_{budget}/{metric}"
            episodes_key = f"eval/budget_{budget}/episodes"
            pts = [
                (row["step"], row[key], _sem(row.get(f"{key}_std"), row.get(episodes_key)))
                for row in rows
                if key in row and "step" in row
            ]
            pts = [p for p in pts if p[1] is not None and math.isfinite(float(p[1]))]
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            steps = np.asarray([p[0] for p in pts], dtype=np.float64)
            vals = np.asarray([p[1] for p in pts], dtype=np.float64)
            ax.plot(steps, vals, color=color, marker="o", markersize=3, label=f"budget {budget}")
            if all(p[2] is not None for p in pts):
                std = np.asarray([p[2] for p in pts], dtype=np.float64)
                ax.fill_between(steps, vals - std, vals + std, color=color, alpha=0.15, linewidth=0)
        if marker_step is not None:
            ax.axvline(marker_step, color="k", linestyle="--", linewidth=1, label="online start")
        ax.set_xlabel("step")
        ax.set_ylabel(CURVE_LABELS[metric])
        if metric == "success":
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def budget_grid(records: Mapping[int, Mapping], metric: str) -> tuple[list[int], list[int], np.ndarray]:
    """(steps, budgets, values[step, budget]) of `vgf eval` records by checkpoint step (each record's `results` maps a
    budget to its statistics); NaN where a step was not evaluated at a budget."""
    steps = sorted(records)
    budgets = sorted({int(budget) for record in records.values() for budget in record["results"]})
    values = np.full((len(steps), len(budgets)), np.nan)
    for i, step in enumerate(steps):
        for budget, stats in records[step]["results"].items():
            if metric in stats:
                values[i, budgets.index(int(budget))] = stats[metric]
    return steps, budgets, values


def plot_budget_heatmap(records: Mapping[int, Mapping], path, metric: str = "normalized_score", title: str = "") -> Path:
    """A heat map of `metric` over training step (rows) and transport budget (columns), from `budget_grid`, each
    cell labelled with its value: where the test-time scaling curve rises, and when."""
    steps, budgets, values = budget_grid(records, metric)
    fig, (ax,) = _new_figure(1, width_per_panel=1.2 + 0.8 * len(budgets), height=1.2 + 0.4 * len(steps))
    image = ax.imshow(values, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_yticks(range(len(steps)), [f"{s:,}" for s in steps])
    ax.set_xlabel("transport budget (steps)")
    ax.set_ylabel("updates")
    for (i, j), value in np.ndenumerate(values):
        if math.isfinite(value):
            ax.text(j, i, f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white")
    fig.colorbar(image, ax=ax, label=CURVE_LABELS.get(metric, metric))
    if title:
        fig.suptitle(title)
    return _save(fig, path)
