"""Success against the transport budget (steps x step size) for one trained run evaluated at several step sizes.

Reads the `eval/budgets_step<N>*.json` files that `vgf eval RUN --set vgf_lr=...` writes (the file without a
setting is the run's own `vgf_lr`), plots one line per step size and prints the numbers as a table. Only the records
of one evaluation seed are read (`--seed`, default 0, as `vgf eval`'s).

    python benchmarks/transport_step_size.py OUT.png RUN_DIR [--seed S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def evaluations(run_dir: Path, seed: int) -> dict[float, dict]:
    """vgf_lr -> that evaluation's record, for the newest evaluated step of evaluation seed `seed`; other changed
    settings are skipped."""
    trained_lr = json.loads((run_dir / "config.json").read_text())["agent_config"]["vgf_lr"]
    records = [json.loads(path.read_text()) for path in sorted((run_dir / "eval").glob("budgets_step*.json"))]
    records = [record for record in records if record["seed"] == seed]
    if not records:
        raise ValueError(f"{run_dir / 'eval'} has no budgets_step*.json of seed {seed}: run "
                         f"`vgf eval {run_dir} --seed {seed} --set vgf_lr=...` first")
    newest = max(record["step"] for record in records)
    by_lr = {}
    for record in records:
        changed = record.get("test_time_settings", {})
        if record["step"] == newest and set(changed) <= {"vgf_lr"}:
            by_lr[float(changed.get("vgf_lr", trained_lr))] = record
    return by_lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("run_dir")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation seed whose records are read")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    by_lr = evaluations(run_dir, args.seed)
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    print(f"{'vgf_lr':>7} {'steps':>5} {'steps x lr':>10} {'success':>7} {'± s.e.':>6} {'displacement':>12}")
    for index, (lr, record) in enumerate(sorted(by_lr.items())):
        budgets = sorted(int(budget) for budget in record["results"])
        success = np.array([record["results"][str(b)]["success"] for b in budgets])
        sem = np.sqrt(success * (1 - success) / record["episodes"])
        total = np.array(budgets) * lr
        ax.errorbar(total, success, yerr=sem, color=f"C{index}", marker="o", capsize=3, label=f"vgf_lr {lr:g}")
        for b, t, s, e in zip(budgets, total, success, sem):
            print(f"{lr:>7g} {b:>5} {t:>10.3f} {s:>7.2f} {e:>6.2f} {record['results'][str(b)]['displacement']:>12.3f}")
    step = next(iter(by_lr.values()))["step"]
    episodes = next(iter(by_lr.values()))["episodes"]
    ax.set_xlabel("transport budget: steps x vgf_lr")
    ax.set_ylabel(f"success rate (± 1 s.e., {episodes} episodes)")
    ax.set_title(f"{run_dir.name}, checkpoint step {step}", fontsize=9)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
