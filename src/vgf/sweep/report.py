"""Benchmark reports from run directories: per-run summaries, the table over seeds, learning curves and
hyperparameter sensitivity plots. Reads only `config.json`, `metrics.jsonl` and `failure.json` files, so any results
directory can be reported again (`vgf bench --report`, `vgf sweep --report`) without training or Ray.

A run's score is its D4RL normalised score where its evaluations have one (D4RL tasks), else its success rate.
Scores are the mean ± standard deviation over seeds (population std, ddof=0, so one seed gives 0): at the last
evaluation (the headline) and at each run's best evaluation, labelled. Agents with transport budgets are shown at
their default budget (their config's `eval_vgf_steps`) and at the budget with the highest mean last score (ties go
to the higher mean return, then the smaller budget).

Runs are pooled into one row only when they trained under the same agent settings, as each run's config.json
resolves them today (`vgf.agents.resolved_config_values`: fields added since filled with what the run used), and on
the same data (the content digest in config.json, where recorded). Runs of one agent, task and overrides whose
settings or data differ (e.g. trained before and after a change of the agent's defaults, or on data remade on another
machine) get one row per variant, labelled with the values that differ, and the report says so; rows of one task
trained on different data are named too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vgf.agents import resolved_config_values
from vgf.sweep.grid import format_value
from vgf.sweep.records import Evaluation, Problem, RunRecord, SensitivityPoint, overrides_label
from vgf.training.checkpoint import atomic_write_text

_EVAL_METRIC = re.compile(r"^eval/budget_(\d+)/(success|normalized_score)$")
SCORE_LABELS = {"success": "success", "normalized_score": "normalized score"}
_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._=+-]")


def _number(value: Any) -> float:
    return float(value) if value is not None else math.nan  # the logger writes non-finite values as strings


def read_run(run_dir: Path) -> RunRecord | Problem:
    """The record of a finished run, or a Problem (failed, unfinished, unreadable) naming the directory."""
    try:
        failure = run_dir / "failure.json"
        if failure.exists():
            attempts = json.loads(failure.read_text())["attempts"]
            return Problem(run_dir.name, f"failed after {len(attempts)} attempt(s): {attempts[-1]['error']}")
        info = json.loads((run_dir / "config.json").read_text())
        settings = info["settings"]
        metrics = run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    except (json.JSONDecodeError, KeyError, IndexError) as error:
        return Problem(run_dir.name, f"unreadable run files: {type(error).__name__}: {error}")
    found = {match.group(2) for row in rows for key in row if (match := _EVAL_METRIC.match(key))}
    metric = "normalized_score" if "normalized_score" in found else "success"
    evaluations: dict[int, list[Evaluation]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row["step"]):
        for key in row:
            match = _EVAL_METRIC.match(key)
            if match and match.group(2) == metric:
                budget = int(match.group(1))
                episode_return = _number(row.get(f"eval/budget_{budget}/return"))
                evaluations[budget].append(Evaluation(row["step"], _number(row[key]), episode_return))
    last_step = max((e[-1].step for e in evaluations.values()), default=0)
    if last_step < settings["steps"]:
        return Problem(run_dir.name, f"unfinished: evaluated up to step {last_step} of {settings['steps']}")
    try:
        agent_config = resolved_config_values(settings["agent"], info.get("agent_config", {}))
    except (ValueError, TypeError, KeyError) as error:
        return Problem(run_dir.name, f"agent_config in config.json is not one that {settings['agent']} can read: {error}")
    return RunRecord(
        name=run_dir.name,
        agent=settings["agent"],
        task=settings["task"],
        seed=settings["seed"],
        overrides=tuple(sorted((key, _hashable(value)) for key, value in settings["overrides"].items())),
        steps=last_step,
        default_budget=info.get("agent_config", {}).get("eval_vgf_steps"),
        evaluations={budget: tuple(evals) for budget, evals in sorted(evaluations.items())},
        metric=metric,
        agent_config=tuple(sorted((key, _hashable(value)) for key, value in agent_config.items())),
        data_sha256=info.get("dataset", {}).get("sha256"),
    )


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return tuple(_hashable(item) for item in value) if isinstance(value, (list, tuple)) else value


def collect_runs(results_dir: Path | str) -> tuple[list[RunRecord], list[Problem]]:
    """Every run directory (a folder with config.json or failure.json) directly under `results_dir`."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} not found")
    records, problems = [], []
    for run_dir in sorted(results_dir.iterdir()):
        if (run_dir / "config.json").exists() or (run_dir / "failure.json").exists():
            outcome = read_run(run_dir)
            (records if isinstance(outcome, RunRecord) else problems).append(outcome)
    return label_variants(records), problems


def _family(record: RunRecord) -> tuple[str, str, tuple]:
    return record.task, record.agent, record.overrides


def data_label(record: RunRecord) -> str:
    """The first 12 hex digits of the run's data digest, or '(unrecorded)'."""
    return record.data_sha256[:12] if record.data_sha256 else "(unrecorded)"


def _settings_and_data(record: RunRecord) -> tuple:
    return (*record.agent_config, ("data", data_label(record)))


def label_variants(records: list[RunRecord]) -> list[RunRecord]:
    """The records with `variant` set where runs of one agent, task and overrides trained under different agent
    settings or on different data: each run's values of the fields that differ among them (the data as `data=<digest>`),
    so such runs never share a row."""
    configs: dict[tuple, set] = defaultdict(set)
    for record in records:
        configs[_family(record)].add(_settings_and_data(record))
    differing = {family: _differing_fields(seen) for family, seen in configs.items() if len(seen) > 1}
    labelled = []
    for record in records:
        keys = differing.get(_family(record))
        if keys is None:
            labelled.append(record)
            continue
        values = dict(_settings_and_data(record))
        label = " ".join(f"{key}={format_value(values[key]) if key in values else '(absent)'}" for key in keys)
        labelled.append(dataclasses.replace(record, variant=label))
    return labelled


def _differing_fields(configs: set) -> list[str]:
    missing, mappings = object(), [dict(config) for config in configs]
    keys = {key for mapping in mappings for key in mapping}
    return sorted(key for key in keys if len({mapping.get(key, missing) for mapping in mappings}) > 1)


def variant_notes(records: list[RunRecord]) -> list[str]:
    """One line per row family split by `label_variants`: which variants, how many runs each."""
    families: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.variant:
            families[_family(record)][record.variant].append(record.name)
    notes = []
    for (task, agent, overrides), variants in sorted(families.items(), key=lambda item: item[0][:2]):
        setting = overrides_label(overrides)
        parts = "; ".join(f"[{variant}]: {len(names)} run(s) ({', '.join(sorted(names))})"
                          for variant, names in sorted(variants.items()))
        notes.append(f"{agent}{f' ({setting})' if setting else ''} on {task}: runs trained under different agent "
                     f"settings or data, one row each: {parts}")
    return notes


def data_notes(records: list[RunRecord]) -> list[str]:
    """One line per task whose runs trained on more than one data set (or some on data they did not record): which
    runs on which, so rows side by side on a task are known to compare agents on different transitions."""
    by_task: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_task[record.task][data_label(record)].append(record.name)
    notes = []
    for task, by_data in sorted(by_task.items()):
        if len(by_data) > 1:
            parts = "; ".join(f"data={label}: {', '.join(sorted(names))}" for label, names in sorted(by_data.items()))
            notes.append(f"{task}: runs trained on {len(by_data)} different data sets (content sha256): {parts}")
    return notes


@dataclasses.dataclass(frozen=True)
class ScoreRow:
    """One line of the table: an agent (with a setting) on a task at one budget, aggregated over seeds."""

    task: str
    agent: str
    setting: str
    budget_choice: str  # 'default' or 'best' for budget agents, 'only' for agents evaluated at budget 0 alone
    budget: int
    seeds: int
    steps: int
    metric: str  # 'success' or 'normalized_score'
    score_last_mean: float
    score_last_std: float
    score_best_mean: float
    score_best_std: float
    return_last_mean: float
    return_last_std: float

    @property
    def budget_label(self) -> str:
        return str(self.budget) if self.budget_choice == "only" else f"{self.budget_choice}: {self.budget}"


def _group(records: list[RunRecord]) -> dict[tuple[str, str, tuple, str], list[RunRecord]]:
    """The table's rows: runs of one task, agent, overrides and variant (`label_variants`)."""
    groups: dict[tuple[str, str, tuple, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(*_family(record), record.variant)].append(record)

    def order(key: tuple[str, str, tuple, str]) -> tuple:
        task, agent, overrides, variant = key
        return task, agent, tuple((name, _sort_key(value)) for name, value in overrides), variant

    return {key: sorted(groups[key], key=lambda r: r.seed) for key in sorted(groups, key=order)}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def _common_budgets(runs: list[RunRecord]) -> list[int]:
    return sorted(set.intersection(*(set(run.evaluations) for run in runs)))


def best_budget(runs: list[RunRecord]) -> int:
    """The budget with the highest mean last score over seeds (then mean last return, then the smaller budget)."""

    def rank(budget: int) -> tuple[float, float, int]:
        last = [run.evaluations[budget][-1] for run in runs]
        return float(np.mean([e.score for e in last])), float(np.mean([e.episode_return for e in last])), -budget

    return max(_common_budgets(runs), key=rank)


def shown_budgets(runs: list[RunRecord]) -> list[tuple[str, int]]:
    """(choice, budget) rows of a group: 'only' for a single budget, else 'default' (when evaluated) and 'best'."""
    budgets = _common_budgets(runs)
    if len(budgets) == 1:
        return [("only", budgets[0])]
    default = runs[0].default_budget
    rows = [("default", default)] if default in budgets else []
    return rows + [("best", best_budget(runs))]


def score_rows(records: list[RunRecord]) -> list[ScoreRow]:
    rows = []
    for (task, agent, _, _), runs in _group(records).items():
        for choice, budget in shown_budgets(runs):
            last = [run.evaluations[budget][-1] for run in runs]
            best = [max(e.score for e in run.evaluations[budget]) for run in runs]
            rows.append(
                ScoreRow(
                    task,
                    agent,
                    runs[0].setting,
                    choice,
                    budget,
                    len(runs),
                    min(run.steps for run in runs),
                    runs[0].metric,
                    *_mean_std([e.score for e in last]),
                    *_mean_std(best),
                    *_mean_std([e.episode_return for e in last]),
                )
            )
    return rows


def swept_hyperparameters(records: list[RunRecord]) -> list[str]:
    """Override keys that take more than one value among the runs."""
    values: dict[str, set] = defaultdict(set)
    for record in records:
        for key, value in record.overrides:
            values[key].add(value)
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def _headline_budget(runs: list[RunRecord]) -> int:
    """The budget a group is plotted at: its only one, else its default, else (default not evaluated) its best."""
    return shown_budgets(runs)[0][1]


def _plotted_budgets(runs: list[RunRecord]) -> list[tuple[str, int]]:
    """The table's budget rows of a group; only the default's when the default budget is also the best."""
    rows = shown_budgets(runs)
    return rows[:1] if len({budget for _, budget in rows}) == 1 else rows


def sensitivity_points(records: list[RunRecord]) -> list[SensitivityPoint]:
    """Last score at each run's headline budget, against each swept hyperparameter: mean ± std over all runs
    with that value (seeds and the other hyperparameters' settings), per task and agent."""
    headline = {run.name: _headline_budget(runs) for runs in _group(records).values() for run in runs}
    points = []
    for key in swept_hyperparameters(records):
        buckets: dict[tuple[str, str, Any], list[float]] = defaultdict(list)
        metrics = {}
        for record in records:
            overrides = dict(record.overrides)
            if key in overrides:
                score = record.evaluations[headline[record.name]][-1].score
                buckets[(record.task, _line_label(record.agent, record.variant and f"[{record.variant}]"),
                         overrides[key])].append(score)
                metrics[record.task] = record.metric
        for (task, agent, value), scores in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1], _sort_key(kv[0][2]))):
            points.append(SensitivityPoint(key, task, agent, value, len(scores), metrics[task], *_mean_std(scores)))
    return points


def _sort_key(value: Any) -> tuple:
    """Numbers by value, then anything else by its text."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, format_value(value))


# ----- files -----

CSV_COLUMNS = [field.name for field in dataclasses.fields(ScoreRow)]
SENSITIVITY_COLUMNS = [field.name for field in dataclasses.fields(SensitivityPoint)]


def _csv(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: round(value, 6) if isinstance(value, float) else value for key, value in row.items()})
    return buffer.getvalue()


def results_csv(rows: list[ScoreRow]) -> str:
    return _csv(CSV_COLUMNS, [dataclasses.asdict(row) for row in rows])


def sensitivity_csv(points: list[SensitivityPoint]) -> str:
    return _csv(SENSITIVITY_COLUMNS, [{**dataclasses.asdict(p), "value": format_value(p.value)} for p in points])


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def budget_curve_lines(records: list[RunRecord]) -> list[str]:
    """Markdown tables of each budget agent's last score at every budget its seeds share, per task: mean ± std over
    seeds, then each seed's value (seed order)."""
    groups = {key: runs for key, runs in _group(records).items() if len(_common_budgets(runs)) > 1}
    if not groups:
        return []
    with_settings = any(runs[0].setting for runs in groups.values())
    lines = ["", "## Budget curves", "", "The last evaluation's score at each transport budget, mean ± std over seeds, "
             "then each seed's value."]
    for task in sorted({key[0] for key in groups}):
        task_groups = [(key, runs) for key, runs in groups.items() if key[0] == task]
        budgets = sorted(set().union(*(_common_budgets(runs) for _, runs in task_groups)))
        header = ["agent", *(["setting"] if with_settings else []), "seeds", "steps", *(f"budget {b}" for b in budgets)]
        lines += ["", f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (_, agent, _, _), runs in task_groups:
            runs = sorted(runs, key=lambda run: run.seed)
            cells = [agent, *([runs[0].setting or "(preset)"] if with_settings else []), str(len(runs)),
                     str(min(run.steps for run in runs))]
            for budget in budgets:
                if budget not in _common_budgets(runs):
                    cells.append("-")
                    continue
                scores = [run.evaluations[budget][-1].score for run in runs]
                cells.append(f"{_pm(*_mean_std(scores))} ({', '.join(f'{score:.2f}' for score in scores)})")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_markdown(rows: list[ScoreRow], problems: list[Problem], title: str, curves: list[str] = (),
                     notes: list[str] = (), data: list[str] = ()) -> str:
    lines = [
        f"# {title}",
        "",
        "Success rate (D4RL tasks: D4RL normalized score), mean ± std over seeds (population std). **last**: at the "
        "final evaluation (the headline); **best eval**: each seed's best evaluation. Budget agents are shown at their "
        "default transport budget (the config's `eval_vgf_steps`) and at the budget with the highest mean last score.",
    ]
    with_settings = any(row.setting for row in rows)
    for task in sorted({row.task for row in rows}):
        task_rows = [r for r in rows if r.task == task]
        score = " / ".join(sorted({SCORE_LABELS[r.metric] for r in task_rows}))
        header = ["agent", *(["setting"] if with_settings else []), "budget", "seeds", "steps",
                  f"{score} (last)", f"{score} (best eval)", "return (last)"]
        lines += ["", f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in task_rows:
            cells = [
                row.agent,
                *([row.setting or "(preset)"] if with_settings else []),
                row.budget_label,
                str(row.seeds),
                str(row.steps),
                _pm(row.score_last_mean, row.score_last_std),
                _pm(row.score_best_mean, row.score_best_std),
                f"{row.return_last_mean:.3f} ± {row.return_last_std:.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += curves
    if notes:
        lines += ["", "## Rows split by agent settings or data", ""] + [f"- {note}" for note in notes]
    if data:
        lines += ["", "## Tasks whose rows trained on different data", ""] + [f"- {note}" for note in data]
    if problems:
        lines += ["", "## Runs not in the table", ""] + [f"- `{p.name}`: {p.reason}" for p in problems]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Report:
    rows: list[ScoreRow]
    problems: list[Problem]
    files: list[Path]
    notes: list[str] = dataclasses.field(default_factory=list)  # rows split by agent settings or data (`variant_notes`)
    data: list[str] = dataclasses.field(default_factory=list)  # tasks whose runs trained on different data (`data_notes`)


def write_report(results_dir: Path | str, title: str | None = None) -> Report:
    """Write results.md, results.csv, plots/learning_curves_<task>.png and, for each swept hyperparameter,
    plots/sensitivity_<name>.png (plus sensitivity.csv) into `results_dir`."""
    from vgf.sweep import figures

    results_dir = Path(results_dir)
    records, problems = collect_runs(results_dir)
    rows = score_rows(records)
    files = [results_dir / "results.md", results_dir / "results.csv"]
    notes, data = variant_notes(records), data_notes(records)
    markdown = results_markdown(rows, problems, title or f"Results: {results_dir}", budget_curve_lines(records), notes, data)
    atomic_write_text(files[0], markdown)
    atomic_write_text(files[1], results_csv(rows))
    groups = _group(records)
    for task in sorted({record.task for record in records}):
        curves = {
            _line_label(agent, runs[0].setting): (_plotted_budgets(runs), runs)
            for (group_task, agent, _, _), runs in groups.items()
            if group_task == task
        }
        path = results_dir / "plots" / f"learning_curves_{safe_file_name(task)}.png"
        files.append(figures.plot_learning_curves(curves, path, task))
    points = sensitivity_points(records)
    if points:
        files.append(results_dir / "sensitivity.csv")
        atomic_write_text(files[-1], sensitivity_csv(points))
        for key in swept_hyperparameters(records):
            path = results_dir / "plots" / f"sensitivity_{safe_file_name(key)}.png"
            files.append(figures.plot_sensitivity([p for p in points if p.hyperparameter == key], path, key))
    return Report(rows, problems, files, notes, data)


def _line_label(agent: str, setting: str) -> str:
    return f"{agent} {setting}".strip()


def safe_file_name(text: str) -> str:
    return _UNSAFE_FILE_CHARACTERS.sub("_", text)
