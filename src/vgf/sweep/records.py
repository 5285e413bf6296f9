"""What a benchmark report is made of: a run's record, a run left out of the table and a point of a sensitivity plot.
The report (`vgf.sweep.report`) builds them from run directories and the figures (`vgf.sweep.figures`) draw them."""

from __future__ import annotations

import dataclasses
from typing import Any

from vgf.sweep.grid import format_value


@dataclasses.dataclass(frozen=True)
class Evaluation:
    step: int
    score: float  # the run's `metric` at this evaluation
    episode_return: float


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run: who it is and its evaluations per budget, in step order."""

    name: str
    agent: str
    task: str
    seed: int
    overrides: tuple[tuple[str, Any], ...]
    steps: int
    default_budget: int | None  # the config's eval_vgf_steps; None for agents without one
    evaluations: dict[int, tuple[Evaluation, ...]]
    metric: str = "success"  # what Evaluation.score holds: 'success' or 'normalized_score' (D4RL tasks)
    agent_config: tuple[tuple[str, Any], ...] = ()  # every value it trained with (vgf.agents.resolved_config_values)
    variant: str = ""  # where runs of one row trained under different agent defaults: this run's values, e.g. 'activation=relu'
    data_sha256: str | None = None  # of the transitions it trained on (config.json's dataset.sha256); None: not recorded

    @property
    def setting(self) -> str:
        """The overrides as one label, e.g. 'num_particles=8 vgf_alpha=0.1' ('' for the preset as it is), then the
        variant in brackets when there is one."""
        label = overrides_label(self.overrides)
        return f"{label} [{self.variant}]".strip() if self.variant else label


def overrides_label(overrides: tuple[tuple[str, Any], ...]) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in overrides)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A run directory that is not in the table, and why."""

    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class SensitivityPoint:
    hyperparameter: str
    task: str
    agent: str
    value: Any
    runs: int
    metric: str
    score_mean: float
    score_std: float
