"""Grids of training runs: what one run is (`RunSpec`), and how `vgf bench` flags or a sweep YAML file expand
into runs, validated before anything is launched."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

from vgf.agents import get_agent, make_config
from vgf.envs import task_spec
from vgf.training import TrainSettings
from vgf.training.tracking import TrackerError, check_loggers, parse_loggers

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._=+-]")


def format_value(value: Any) -> str:
    """A hyperparameter value as it appears in run names and tables: 0.1 -> '0.1', (256, 256) -> '256x256'."""
    if isinstance(value, (tuple, list)):
        return "x".join(format_value(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a grid. Its `name` (and so its directory) depends on what identifies the run (agent,
    task, seed, overrides), not on `steps`: launching the same grid with more steps extends the runs."""

    agent: str
    task: str
    seed: int
    preset: str
    steps: int
    overrides: tuple[tuple[str, Any], ...] = ()  # sorted (field, value) pairs, hashable
    eval_every: int = 1000
    eval_episodes: int = 10
    eval_budgets: tuple[int, ...] = (0,)
    data_dir: str = "data"
    loggers: tuple[str, ...] = ("csv",)
    keep_checkpoints: int = 3  # the newest K kept; a study that re-evaluates every checkpoint keeps them all
    checkpoint_every: int | None = None  # None: at every evaluation
    keep_every: int | None = None  # checkpoints at multiples of it are kept besides the newest K

    @property
    def name(self) -> str:
        parts = [self.agent, self.task, f"s{self.seed}", *(f"{key}={format_value(value)}" for key, value in self.overrides)]
        return _UNSAFE_NAME_CHARACTERS.sub("_", "-".join(parts))

    def run_dir(self, results_dir: Path | str) -> Path:
        return Path(results_dir) / self.name

    def train_settings(self, results_dir: Path | str) -> TrainSettings:
        return TrainSettings(
            agent=self.agent,
            task=self.task,
            run_dir=str(self.run_dir(results_dir)),
            preset=self.preset,
            steps=self.steps,
            eval_every=self.eval_every,
            log_every=min(500, self.eval_every),
            seed=self.seed,
            data_dir=self.data_dir,
            eval_budgets=self.eval_budgets,
            eval_episodes=self.eval_episodes,
            overrides=dict(self.overrides),
            loggers=self.loggers,
            keep_checkpoints=self.keep_checkpoints,
            checkpoint_every=self.checkpoint_every,
            keep_every=self.keep_every,
            group=Path(results_dir).resolve().name,  # the runs of one results directory form one W&B group
        )


class GridError(ValueError):
    """A grid that cannot run; the message names the setting (the YAML key, or the flag) that is wrong."""


def uses_budgets(agent: str) -> bool:
    """Whether the agent's actions depend on the transport budget (agents without it are evaluated at budget 0)."""
    return getattr(get_agent(agent), "USES_BUDGETS", True)


def _field_names(agent: str, preset: str) -> set[str]:
    return {field.name for field in dataclasses.fields(make_config(agent, preset))}


@dataclasses.dataclass(frozen=True)
class Grid:
    """agents x tasks x seeds x every combination of `hyperparameters` (agent config fields -> values).

    `overrides` and `hyperparameters` apply to each agent whose config has the field, so `vgf_alpha` is swept for
    VGF while BC runs once per task and seed. Budget agents are evaluated at `eval_budgets` plus their config's
    default budget on that task (`eval_vgf_steps`), the others at budget 0. `eval_every` None means ten evaluations per run.
    """

    agents: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    preset: str = "cpu-small"
    eval_every: int | None = None
    eval_episodes: int = 10
    eval_budgets: tuple[int, ...] = (0, 1, 2, 4)
    data_dir: str = "data"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparameters: dict[str, tuple] = dataclasses.field(default_factory=dict)
    loggers: tuple[str, ...] = ("csv",)  # where each run's metric rows go (vgf.training.tracking)
    keep_checkpoints: int = 3
    checkpoint_every: int | None = None
    keep_every: int | None = None

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, each validated (agent, preset, task, config values, evaluation settings, loggers)."""
        self._check_lists()
        try:
            check_loggers(self.loggers)  # refused before any run is launched
        except TrackerError as error:
            raise GridError(f"loggers: {error}") from None
        for agent in self.agents:
            try:
                get_agent(agent)
            except ValueError as error:
                raise GridError(f"agents: {error}") from None
            try:
                make_config(agent, self.preset)
            except ValueError as error:
                raise GridError(f"preset: {error}") from None
        for task in self.tasks:
            try:
                task_spec(task)
            except ValueError as error:
                raise GridError(f"tasks: {error}") from None
        self._check_fields()
        specs = [spec for agent in self.agents for spec in self._agent_runs(agent)]
        names = [spec.name for spec in specs]
        clashes = sorted({name for name in names if names.count(name) > 1})
        if clashes:
            raise GridError(f"hyperparameters: values that differ but print the same give clashing run names: {clashes}")
        return specs

    def _check_lists(self) -> None:
        for key in ("agents", "tasks", "seeds"):
            values = getattr(self, key)
            if not values:
                raise GridError(f"{key}: needs at least one value")
            if len(set(values)) != len(values):
                raise GridError(f"{key}: values repeat: {list(values)}")
        if self.steps <= 0:
            raise GridError(f"steps: must be > 0, got {self.steps}")
        for key, values in self.hyperparameters.items():
            if not values:
                raise GridError(f"hyperparameters.{key}: needs at least one value")

    def _check_fields(self) -> None:
        fields = {agent: _field_names(agent, self.preset) for agent in self.agents}
        for section, names in (("set", self.overrides), ("hyperparameters", self.hyperparameters)):
            for name in names:
                if not any(name in agent_fields for agent_fields in fields.values()):
                    listing = "; ".join(f"{agent}: {', '.join(sorted(f))}" for agent, f in fields.items())
                    raise GridError(f"{section}.{name}: no agent in `agents` has a config field {name!r} (fields: {listing})")
        for agent in self.agents:
            fixed = {name: value for name, value in self.overrides.items() if name in fields[agent]}
            try:
                make_config(agent, self.preset, fixed)
            except (ValueError, TypeError) as error:
                raise GridError(f"set: {error}") from None
            for name, values in self.hyperparameters.items():
                if name not in fields[agent]:
                    continue
                for value in values:
                    try:
                        make_config(agent, self.preset, {**fixed, name: value})
                    except (ValueError, TypeError) as error:
                        raise GridError(f"hyperparameters.{name}: value {value!r}: {error}") from None

    def _agent_runs(self, agent: str) -> list[RunSpec]:
        fields = _field_names(agent, self.preset)
        fixed = {name: value for name, value in self.overrides.items() if name in fields}
        swept = {name: values for name, values in self.hyperparameters.items() if name in fields}
        eval_every = self.eval_every or max(1, self.steps // 10)
        specs = []
        for combination in itertools.product(*swept.values()):
            overrides = {**fixed, **dict(zip(swept, combination))}
            budgets = {}
            for task in self.tasks:  # the preset's per-environment values, with the overrides on top, must hold too
                try:
                    config = make_config(agent, self.preset, overrides, task=task)
                except (ValueError, TypeError) as error:
                    raise GridError(f"tasks: {task}: {error}") from None
                budgets[task] = (0,)
                if uses_budgets(agent):  # the default budget can be a per-environment value (D4RL's is 3)
                    default = getattr(config, "eval_vgf_steps", None)
                    budgets[task] = tuple(sorted(set(self.eval_budgets) | ({default} if default is not None else set())))
            for task, seed in itertools.product(self.tasks, self.seeds):
                spec = RunSpec(
                    agent=agent,
                    task=task,
                    seed=seed,
                    preset=self.preset,
                    steps=self.steps,
                    overrides=tuple(sorted(overrides.items())),
                    eval_every=eval_every,
                    eval_episodes=self.eval_episodes,
                    eval_budgets=budgets[task],
                    data_dir=self.data_dir,
                    loggers=parse_loggers(self.loggers),
                    keep_checkpoints=self.keep_checkpoints,
                    checkpoint_every=self.checkpoint_every,
                    keep_every=self.keep_every,
                )
                try:
                    spec.train_settings(".").validate()
                except ValueError as error:
                    key = next((key for key in CHECKPOINT_KEYS if key in str(error)), "eval")
                    raise GridError(f"{key}: {error}") from None
                specs.append(spec)
        return specs


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one run reserves on the Ray cluster (fractions allowed, e.g. 0.5 GPU puts two runs on a GPU)."""

    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self):
        if self.cpus_per_run <= 0 or self.gpus_per_run < 0:
            raise GridError(f"resources: cpus must be > 0 and gpus >= 0, got cpus={self.cpus_per_run}, gpus={self.gpus_per_run}")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep file: the grid, where its runs go, what each run reserves, and how often a failed run is retried."""

    grid: Grid
    results_dir: Path
    resources: Resources = Resources()
    retries: int = 1


SWEEP_KEYS = {
    "agents": "list of agent names, e.g. [vgf, bc]",
    "tasks": "list of task names, e.g. [bandit, cube-single-play-singletask-task1]",
    "seeds": "list of integers",
    "steps": "updates per run",
    "preset": "config preset of every agent (default cpu-small)",
    "eval": "mapping with every, episodes, budgets",
    "data_dir": "directory of the datasets (default data)",
    "results_dir": "where run directories and the report go (default runs/sweep-<file name>)",
    "set": "mapping of config fields fixed for every agent that has them",
    "hyperparameters": "mapping of config field -> list of values; every combination is a run",
    "resources": "mapping with cpus and gpus per run",
    "keep_checkpoints": "the newest K checkpoints of each run are kept (default 3)",
    "checkpoint_every": "updates between checkpoints (default: eval.every)",
    "keep_every": "checkpoints whose step is a multiple of it are kept besides the newest keep_checkpoints",
    "retries": "times a failed run is tried again (default 1)",
}
CHECKPOINT_KEYS = ("keep_checkpoints", "checkpoint_every", "keep_every")
_EVAL_KEYS = ("every", "episodes", "budgets")
_RESOURCE_KEYS = ("cpus", "gpus")


def _expect(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise GridError(f"{key}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_list(raw: dict, key: str) -> tuple[str, ...]:
    value = raw[key]
    _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), key, "a list of names", value)
    return tuple(value)


def _mapping(raw: dict, key: str, allowed: tuple[str, ...] | None = None) -> dict:
    value = raw.get(key) or {}
    _expect(isinstance(value, dict), key, "a mapping", value)
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise GridError(f"{key}: unknown key(s) {unknown}; valid keys: {', '.join(allowed)}")
    return value


def _config_value(value: Any) -> Any:
    """YAML lists become tuples, the form agent configs hold (e.g. hidden_dims)."""
    return tuple(value) if isinstance(value, list) else value


def parse_sweep(raw: Any, source: str = "sweep file", base_name: str = "sweep") -> SweepConfig:
    """A `SweepConfig` from the parsed YAML mapping; errors are `GridError`s that start with the YAML key."""
    try:
        return _parse_sweep(raw, base_name)
    except GridError as error:
        raise GridError(f"{source}: {error}") from None


def _parse_sweep(raw: Any, base_name: str) -> SweepConfig:
    if not isinstance(raw, dict):
        raise GridError(f"expected a mapping of keys ({', '.join(SWEEP_KEYS)}), got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise GridError(f"unknown key(s) {unknown}; valid keys: " + "; ".join(f"{k} ({v})" for k, v in SWEEP_KEYS.items()))
    missing = [key for key in ("agents", "tasks", "seeds", "steps") if key not in raw]
    if missing:
        raise GridError(f"missing key(s) {missing}")
    seeds = raw["seeds"]
    _expect(isinstance(seeds, list) and all(_is_int(s) for s in seeds), "seeds", "a list of integers", seeds)
    _expect(_is_int(raw["steps"]), "steps", "an integer", raw["steps"])
    preset = raw.get("preset", "cpu-small")
    _expect(isinstance(preset, str), "preset", "a preset name", preset)
    data_dir = raw.get("data_dir", "data")
    _expect(isinstance(data_dir, str), "data_dir", "a path", data_dir)

    evaluation = _mapping(raw, "eval", _EVAL_KEYS)
    every = evaluation.get("every")
    _expect(every is None or _is_int(every), "eval.every", "an integer", every)
    episodes = evaluation.get("episodes", 10)
    _expect(_is_int(episodes), "eval.episodes", "an integer", episodes)
    budgets = evaluation.get("budgets", [0, 1, 2, 4])
    _expect(isinstance(budgets, list) and budgets and all(_is_int(b) for b in budgets), "eval.budgets", "a list of integers", budgets)

    fixed = {name: _config_value(value) for name, value in _mapping(raw, "set").items()}
    hyperparameters = {}
    for name, values in _mapping(raw, "hyperparameters").items():
        _expect(isinstance(values, list) and values, f"hyperparameters.{name}", "a non-empty list of values", values)
        hyperparameters[name] = tuple(_config_value(value) for value in values)

    resources = _mapping(raw, "resources", _RESOURCE_KEYS)
    cpus, gpus = resources.get("cpus", 1), resources.get("gpus", 0)
    _expect(_is_number(cpus) and _is_number(gpus), "resources", "numbers for cpus and gpus", resources)
    keep = raw.get("keep_checkpoints", 3)
    _expect(_is_int(keep) and keep >= 1, "keep_checkpoints", "a positive integer", keep)
    checkpoint_every, keep_every = raw.get("checkpoint_every"), raw.get("keep_every")
    for key, value in (("checkpoint_every", checkpoint_every), ("keep_every", keep_every)):
        _expect(value is None or (_is_int(value) and value >= 1), key, "a positive integer", value)
    retries = raw.get("retries", 1)
    _expect(_is_int(retries) and retries >= 0, "retries", "a non-negative integer", retries)
    results_dir = raw.get("results_dir", f"runs/sweep-{base_name}")
    _expect(isinstance(results_dir, str), "results_dir", "a path", results_dir)

    grid = Grid(
        agents=_string_list(raw, "agents"),
        tasks=_string_list(raw, "tasks"),
        seeds=tuple(seeds),
        steps=raw["steps"],
        preset=preset,
        eval_every=every,
        eval_episodes=episodes,
        eval_budgets=tuple(budgets),
        data_dir=data_dir,
        overrides=fixed,
        hyperparameters=hyperparameters,
        keep_checkpoints=keep,
        checkpoint_every=checkpoint_every,
        keep_every=keep_every,
    )
    grid.runs()  # validates every run now, so the error names this file
    return SweepConfig(grid, Path(results_dir), Resources(float(cpus), float(gpus)), retries)


def load_sweep(path: Path | str) -> SweepConfig:
    """Read a sweep YAML file (format: README, "Benchmarks and sweeps"; example: examples/sweep.yaml)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sweep file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from None
    return parse_sweep(raw, str(path), path.stem)
