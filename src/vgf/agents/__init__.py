"""Agents: each module holds its Config, PRESETS, USES_BUDGETS, TEST_TIME_FIELDS, create(), and an agent with update() and act().

VGF and its amortised variant (avgf) honour per-state transport budgets; bc, rejection sampling (VGF without
transport) and the baselines fql, iql and rebrac ignore them.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from vgf.agents import avgf, bc, fql, iql, rebrac, rejection, vgf

AGENTS: dict[str, ModuleType] = {
    "vgf": vgf,
    "bc": bc,
    "avgf": avgf,
    "rejection": rejection,
    "fql": fql,
    "iql": iql,
    "rebrac": rebrac,
}
CONFIG_CLASSES = {
    "vgf": vgf.VGFConfig,
    "bc": bc.BCConfig,
    "avgf": avgf.AVGFConfig,
    "rejection": rejection.RejectionConfig,
    "fql": fql.FQLConfig,
    "iql": iql.IQLConfig,
    "rebrac": rebrac.ReBRACConfig,
}


def get_agent(name: str) -> ModuleType:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; valid agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def task_dataset(task: str) -> str | None:
    """The dataset a task trains on, without its version: 'cube-single-play' for 'cube-single-play-singletask-task1',
    'hopper-medium-replay' for 'd4rl:hopper-medium-replay-v5' (and -v2); None for the bandit, Minari and unknown names."""
    # imported here: vgf.envs loads gymnasium, which building a config does not need
    from vgf.envs import D4RL_PREFIX, parse_task
    from vgf.envs.d4rl_envs import parse_d4rl_task

    try:
        if task.startswith(D4RL_PREFIX):
            return parse_d4rl_task(task).dataset_name.rsplit("-v", 1)[0]
        return parse_task(task).dataset_name
    except ValueError:
        return None


def is_d4rl_locomotion(task: str | None) -> bool:
    """Whether `task` is a D4RL locomotion task ('d4rl:hopper-medium-v2', 'd4rl:walker2d-medium-replay-v5', ...)."""
    from vgf.envs import D4RL_PREFIX
    from vgf.envs.d4rl_envs import parse_d4rl_task

    if task is None or not task.startswith(D4RL_PREFIX):
        return False
    try:
        return parse_d4rl_task(task).family != "antmaze"
    except ValueError:
        return False


def scales_rewards(agent: str, task: str | None) -> bool:
    """Whether the agent's reference scales rewards on this task by 1000 / (max - min dataset episode return): on
    D4RL locomotion, for the agents whose module sets `D4RL_LOCOMOTION_REWARD_SCALING` (VGF's and IQL's code do)."""
    return bool(getattr(get_agent(agent), "D4RL_LOCOMOTION_REWARD_SCALING", False)) and is_d4rl_locomotion(task)


def task_values(agent: str, preset: str, task: str | None) -> dict:
    """The config values the agent's `preset` takes on `task`: its module's TASK_VALUES for the task's dataset when
    the preset is one of its TASK_PRESETS (the baselines' per-environment settings from the FQL paper), else none."""
    module = get_agent(agent)
    if task is None or preset not in getattr(module, "TASK_PRESETS", ()):
        return {}
    return dict(getattr(module, "TASK_VALUES", {}).get(task_dataset(task), {}))


def make_config(agent: str, preset: str, overrides: dict | None = None, task: str | None = None):
    """The preset's config with `overrides` (field -> value) applied, validated; unknown names are listed.

    With a `task`, the preset first takes that task's environment values (`task_values`), and `overrides` win over them;
    on D4RL locomotion an agent may name other presets for it (`LOCOMOTION_PRESETS`: VGF's paper-d4rl and cpu-d4rl).
    """
    module = get_agent(agent)
    if preset not in module.PRESETS:
        raise ValueError(f"unknown preset {preset!r} for agent {agent!r}; valid presets: {', '.join(module.PRESETS)}")
    if is_d4rl_locomotion(task):  # an agent with presets of its own for locomotion (VGF: paper -> paper-d4rl)
        preset = getattr(module, "LOCOMOTION_PRESETS", {}).get(preset, preset)
    config = dataclasses.replace(module.PRESETS[preset], **task_values(agent, preset, task))
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for agent {agent!r}; valid fields: {', '.join(fields)}")
    for name, value in overrides.items():
        if isinstance(getattr(config, name), tuple) and not isinstance(value, tuple):
            overrides[name] = tuple(value)
    return dataclasses.replace(config, **overrides).validate()


def with_test_time_settings(agent_name: str, agent, settings: dict):
    """`agent` acting with some config fields changed (transport step size, particle count, ...); its networks are kept.

    Only the agent's TEST_TIME_FIELDS may change: the others shape its networks or only matter in training.
    """
    if not settings:
        return agent
    allowed = get_agent(agent_name).TEST_TIME_FIELDS
    refused = sorted(set(settings) - set(allowed))
    if refused:
        choices = ", ".join(allowed) if allowed else "none: its actor is a trained network"
        raise ValueError(f"{refused}: not a test-time field of agent {agent_name!r}; test-time fields: {choices}")
    return agent.replace(config=dataclasses.replace(agent.config, **typed_values(agent.config, settings)).validate())


def typed_values(config, settings: dict) -> dict:
    """`settings` with the types of `config`'s fields: an int given for a float field becomes that float (so
    `vgf_lr=0` and `vgf_lr=0.0` are one setting); any other type mismatch is an error naming the field."""
    typed = {}
    for name, value in settings.items():
        current = getattr(config, name)
        if isinstance(current, float) and type(value) is int:
            value = float(value)
        if type(value) is not type(current):
            raise ValueError(f"{name} must be {type(current).__name__}, got {value!r}")
        typed[name] = value
    return typed


def config_from_dict(agent: str, values: dict):
    """Rebuild an agent config from its JSON form (lists become tuples).

    A config written by an earlier vgf gets the fields added since from the agent's `LEGACY_VALUES`, the values that
    run was trained with (never today's defaults), after its `upgrade_config` (if any) has mapped renamed fields.
    """
    values = upgraded_config_values(agent, values)
    cls = CONFIG_CLASSES[get_agent(agent).__name__.rsplit(".", 1)[-1]]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}).validate()


def upgraded_config_values(agent: str, values: dict) -> dict:
    """A stored config dict as today's vgf reads it: renamed fields mapped (`upgrade_config`), fields added since
    filled with what that run was trained with (`LEGACY_VALUES`); fields no longer known are kept as they were."""
    module = get_agent(agent)
    return {**getattr(module, "LEGACY_VALUES", {}), **getattr(module, "upgrade_config", dict)(values)}


def resolved_config_values(agent: str, values: dict) -> dict:
    """Every value a stored config trained with: the upgraded dict with the defaults of fields it leaves out, so two
    runs' dicts are equal exactly when they trained under the same agent settings."""
    known = dataclasses.asdict(config_from_dict(agent, values))
    values = upgraded_config_values(agent, values)
    return {**{k: v for k, v in values.items() if k not in known}, **known}


def needs_next_actions(agent: str, config) -> bool:
    """Whether the agent's training batches must hold 'next_actions' (the dataset's action one step later)."""
    return bool(getattr(get_agent(agent), "needs_next_actions", lambda config: False)(config))


__all__ = [
    "AGENTS",
    "config_from_dict",
    "get_agent",
    "is_d4rl_locomotion",
    "make_config",
    "needs_next_actions",
    "resolved_config_values",
    "scales_rewards",
    "task_dataset",
    "task_values",
    "typed_values",
    "with_test_time_settings",
]
