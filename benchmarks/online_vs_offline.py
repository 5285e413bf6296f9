"""Evaluation success against update step for several run directories on one axis, each run's switch to its online
phase marked: the figure that tells an online gain from the gain of simply training longer.

    python benchmarks/online_vs_offline.py OUT.png RUN_DIR [RUN_DIR ...] [--budget 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def success_curve(run_dir: Path, budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """(steps, success, standard error, switch step) from a run directory; the switch is None for an offline run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    key = f"eval/budget_{budget}/success"
    evaluated = [row for row in rows if key in row]
    if not evaluated:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no {key!r} rows")
    steps = np.array([row["step"] for row in evaluated])
    success = np.array([row[key] for row in evaluated])
    sem = np.sqrt(success * (1 - success) / settings["eval_episodes"])
    switch = settings["steps"] if any(row.get("phase") == "online" for row in rows) else None
    return steps, success, sem, switch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--budget", type=int, default=0)
    args = parser.parse_args()
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for index, run_dir in enumerate(map(Path, args.run_dirs)):
        steps, success, sem, switch = success_curve(run_dir, args.budget)
        color = f"C{index % 10}"
        if switch is None:
            ax.plot(steps, success, color=color, marker="o", markersize=3, label=run_dir.name)
            ax.fill_between(steps, success - sem, success + sem, color=color, alpha=0.12, linewidth=0)
            continue
        # The offline phase is faded: runs switched from copies of one offline run would otherwise hide each other.
        offline, online = steps <= switch, steps >= switch
        ax.plot(steps[offline], success[offline], color=color, linewidth=0.8, alpha=0.35)
        ax.plot(steps[online], success[online], color=color, marker="o", markersize=3, label=run_dir.name)
        ax.fill_between(steps[online], (success - sem)[online], (success + sem)[online], color=color, alpha=0.12, linewidth=0)
        ax.axvline(switch, color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("update step (dashed: a run's switch to online; faded: its offline phase)")
    ax.set_ylabel(f"success rate, budget {args.budget} (± 1 s.e.)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
