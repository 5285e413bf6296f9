"""D4RL normalised scores: 100 * (R - R_random) / (R_expert - R_random) with D4RL's reference returns.

>>> round(d4rl_normalized_score("hopper-medium-v2", 3234.3), 6)
100.0
"""

from __future__ import annotations

import difflib

import numpy as np

from vgf.data.dataset import DatasetError

__all__ = ["D4RL_REFERENCE_RETURNS", "d4rl_normalized_score"]

# (random-policy return, expert return) per environment. Source: the D4RL repository
# (Farama-Foundation/D4RL), file d4rl/infos.py, dictionaries REF_MIN_SCORE and REF_MAX_SCORE, at commit
# 61b0d257d375f9e1db07d0f474d9e7caf1df7347. D4RL gives every dataset of one environment the same pair
# (its v1/v2 locomotion and v1 Adroit entries are copied from the v0 ones), so they are kept per
# environment here and expanded to dataset names below.
_LOCOMOTION = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
_ADROIT = {
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "door": (-56.512833, 2880.5693087298737),
}
_ANTMAZE = (0.0, 1.0)  # success rate: a return of 1 means the goal was reached
_KITCHEN = (0.0, 4.0)  # number of the four sub-tasks completed

_LOCOMOTION_DATASETS = ("random", "medium", "expert", "medium-replay", "medium-expert")
_ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")


def _reference_table() -> dict[str, tuple[float, float]]:
    table: dict[str, tuple[float, float]] = {}
    for env, scores in _LOCOMOTION.items():
        # v5: the datasets `vgf data make` builds by D4RL's protocol in Gymnasium's v5 envs keep D4RL's references.
        for version in ("v0", "v1", "v2", "v5"):
            # full-replay datasets exist from v1 on.
            for dataset in _LOCOMOTION_DATASETS + (("full-replay",) if version in ("v1", "v2") else ()):
                table[f"{env}-{dataset}-{version}"] = scores
    for env, scores in _ADROIT.items():
        for version in ("v0", "v1"):
            for dataset in ("human", "cloned", "expert"):
                table[f"{env}-{dataset}-{version}"] = scores
    for version in ("v0", "v2"):
        for dataset in _ANTMAZE_DATASETS:
            table[f"antmaze-{dataset}-{version}"] = _ANTMAZE
    for dataset in ("complete", "partial", "mixed"):
        table[f"kitchen-{dataset}-v0"] = _KITCHEN
    return dict(sorted(table.items()))


D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = _reference_table()


def d4rl_normalized_score(task: str, raw_return):
    """D4RL's normalised score of an undiscounted episode return (float, or an array of them).

    `task` is a D4RL dataset name such as 'hopper-medium-v2' or 'antmaze-large-play-v2'. 0 is the random
    policy, 100 the expert. An unknown name raises `DatasetError` listing the close and the known names.
    """
    if task not in D4RL_REFERENCE_RETURNS:
        close = difflib.get_close_matches(str(task), D4RL_REFERENCE_RETURNS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DatasetError(
            f"no D4RL reference returns for task {task!r}{hint}. Known tasks: {', '.join(D4RL_REFERENCE_RETURNS)}"
        )
    random_return, expert_return = D4RL_REFERENCE_RETURNS[task]
    score = 100.0 * (np.asarray(raw_return, dtype=np.float64) - random_return) / (expert_return - random_return)
    return float(score) if score.ndim == 0 else score
