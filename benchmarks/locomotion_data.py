"""The table of the locomotion datasets made by `vgf data make <env>-<dataset>-v5`, beside D4RL's published figures.

    python benchmarks/locomotion_data.py --data-dir /work/vgf-data --times /work/vgf-data/logs/times.txt \
        --out benchmarks/results/locomotion-data hopper-medium-v5 hopper-medium-replay-v5 ...

Reads each file (`vgf.data.locomotion.dataset_summary`: provenance, size, returns, sha256) and its teacher run's
state (`<data-dir>/teachers/<env>-v5-s<seed>/state.json`: steps and training seconds to the medium evaluation), and
writes `datasets.json` (every figure, the record to rebuild from) and `README.md`'s table. `--times` is the log of
the `vgf data make` commands (lines `NAME rc=0 wall_s=S`), whose wall time is the dataset's last command: the
teacher's remaining steps (none when another dataset already trained it) and the collection.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from vgf.data.locomotion import dataset_summary, parse_locomotion_name
from vgf.files import atomic_write_text

# D4RL's own datasets of the same names (v2, recorded in gym's mujoco-py v2 envs); see PUBLISHED_SOURCE.
PUBLISHED: dict[str, dict] = {}
PUBLISHED_SOURCE = ""


def wall_times(path: Path | None) -> dict[str, float]:
    times = {}
    if path is not None:
        for line in path.read_text().splitlines():
            if match := re.match(r"^(\S+) rc=0 wall_s=(\d+)$", line.strip()):
                times[match[1]] = float(match[2])
    return times


def row(data_dir: Path, name: str, times: dict[str, float]) -> dict:
    env, _ = parse_locomotion_name(name)
    summary = dataset_summary(data_dir / f"{name}.hdf5")
    state = json.loads((data_dir / "teachers" / f"{env}-v5-s{summary['seed']}" / "state.json").read_text())
    medium = state["medium"] or {}
    return {**summary, "make_wall_s": times.get(name), "teacher_seconds_to_medium": medium.get("seconds"),
            "teacher_steps_per_s": medium["steps"] / medium["seconds"] if medium else None,
            "teacher_resumes": state["resumes"], "published": PUBLISHED.get(name.replace("-v5", "-v2"))}


def markdown(rows: list[dict]) -> str:
    def number(value, digits=1):
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| dataset | teacher steps | teacher eval return | teacher min to medium | last make command s | episodes | "
        "transitions | return mean / min / max | normalised mean | D4RL v2: transitions, episodes, normalised mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        part = parse_locomotion_name(r["dataset"])[1].split("-")[-1] if r["dataset"].count("expert") else \
            parse_locomotion_name(r["dataset"])[1]  # medium-expert: its expert half's teacher
        published = r["published"] or {}
        lines.append(
            f"| {r['dataset']} | {r[f'{part}_teacher_steps']:,} | {number(r[f'{part}_teacher_eval_return'])} | "
            f"{number((r['teacher_seconds_to_medium'] or 0) / 60)} | {number(r['make_wall_s'], 0)} | {r['episodes']:,} | "
            f"{r['transitions']:,} | {number(r['return_mean'])} / {number(r['return_min'])} / {number(r['return_max'])} | "
            f"{number(r['normalized_return_mean'])} | "
            f"{', '.join(str(published.get(k, '-')) for k in ('transitions', 'episodes', 'normalized_mean'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--times", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    times = wall_times(args.times)
    rows = [row(args.data_dir, name, times) for name in args.names]
    atomic_write_text(args.out / "datasets.json", json.dumps(rows, indent=1) + "\n")
    atomic_write_text(args.out / "table.md", markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
