"""The in-memory transition dataset every agent trains on, and its validation.

A `Dataset` is six aligned float32 arrays. It is built through `Dataset.from_arrays`, which checks
shapes, lengths and finiteness and explains any problem in terms of the file (or other source) the
arrays came from, so that a bad data file fails loudly at load time instead of as NaNs mid-training.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ARRAY_KEYS",
    "DEFAULT_ACTION_BOUNDS",
    "REQUIRED_KEYS",
    "Dataset",
    "DatasetError",
    "check_array_set",
    "check_finite",
    "count_outside_action_box",
    "enforce_action_box",
]

# Every agent samples and clips its actions to this box; data from an env with other bounds says so.
DEFAULT_ACTION_BOUNDS = (-1.0, 1.0)
REQUIRED_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")
ARRAY_KEYS = ("observations", "actions", "rewards", "next_observations", "masks", "terminals")
RETURN_RANGE = 1000.0  # episode returns span this after reward scaling (`Dataset.return_range_scale`)
_MATRIX_KEYS = ("observations", "actions", "next_observations")
_VECTOR_KEYS = ("rewards", "masks", "terminals")


class DatasetError(ValueError):
    """A data file or array set is missing, malformed or inconsistent.

    Messages name the source (file path or description), the offending key and its shape or value.
    """


def _shape_str(array: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"


def _as_numeric(value, key: str, source: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DatasetError(f"{source}: key '{key}' cannot be read as an array ({exc})") from exc
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise DatasetError(f"{source}: key '{key}' has non-numeric dtype {array.dtype} (shape {_shape_str(array)})")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DatasetError(f"{source}: key '{key}' has complex dtype {array.dtype}")
    return array


def _first_bad_row(bad: np.ndarray) -> int:
    """Row index of the first True entry of a boolean array (rows = first axis)."""
    flat_index = int(np.argmax(bad.reshape(-1)))
    return int(np.unravel_index(flat_index, bad.shape)[0])


def check_finite(source: str, key: str, value: np.ndarray) -> None:
    """Raise `DatasetError` with the count and first row of NaN/inf entries in a float array."""
    if not np.issubdtype(value.dtype, np.floating):
        return
    bad = ~np.isfinite(value)
    count = int(bad.sum())
    if count:
        raise DatasetError(
            f"{source}: key '{key}' has {count} non-finite value(s) (NaN or inf); first at index {_first_bad_row(bad)}"
        )


def check_array_set(
    arrays: Mapping,
    source: str,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    matrices: tuple[str, ...] = (),
    vectors: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    squeeze: bool = True,
) -> dict[str, np.ndarray]:
    """The arrays named in `required`, and those of `optional` that are present, checked alike for every source.

    Every data path (in-memory arrays, OGBench .npz files, D4RL HDF5 files) checks its arrays here. The keys must
    be present and numeric. `matrices` must be [N, dim]. `vectors` must be [N], or [N, 1] squeezed to [N] when
    `squeeze`. All arrays must share one length with at least one row, float arrays must have no NaN or inf, and
    `flags` must hold only 0/1. A `DatasetError` names the source, the key and its shape or first bad row.
    """
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DatasetError(
            f"{source}: missing required key(s) {', '.join(repr(k) for k in missing)}; "
            f"found keys: {sorted(str(k) for k in arrays.keys())}"
        )
    names = [*required, *(key for key in optional if key in arrays and arrays[key] is not None)]
    checked = {key: _as_numeric(arrays[key], key, source) for key in names}
    for key in matrices:
        if key in checked and checked[key].ndim != 2:
            raise DatasetError(f"{source}: key '{key}' must be 2-D [N, dim], got shape {_shape_str(checked[key])}")
    for key in vectors:
        if key not in checked or checked[key].ndim == 1:
            continue
        if squeeze and checked[key].ndim == 2 and checked[key].shape[1] == 1:
            checked[key] = checked[key][:, 0]
        else:
            expected = "[N] or [N, 1]" if squeeze else "[N]"
            raise DatasetError(f"{source}: key '{key}' must have shape {expected}, got shape {_shape_str(checked[key])}")
    lengths = {key: int(value.shape[0]) for key, value in checked.items() if value.ndim >= 1}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise DatasetError(f"{source}: arrays have different lengths ({listing})")
    first = required[0]
    if not lengths.get(first):
        raise DatasetError(f"{source}: dataset is empty (key '{first}' has shape {_shape_str(checked[first])})")
    for key, value in checked.items():
        check_finite(source, key, value)
    for key in flags:
        if key not in checked:
            continue
        value = checked[key].astype(np.float64)
        bad = (value != 0.0) & (value != 1.0)
        if bad.any():
            index = _first_bad_row(bad)
            raise DatasetError(
                f"{source}: key '{key}' must contain only 0/1 values; {int(bad.sum())} entries differ, "
                f"first at index {index} (value {checked[key][index]!r})"
            )
    return checked


def _bounds_str(low: np.ndarray, high: np.ndarray) -> str:
    if low.size == 1 or (np.all(low == low.flat[0]) and np.all(high == high.flat[0])):
        return f"[{float(low.flat[0]):g}, {float(high.flat[0]):g}]"
    return f"the action bounds low={low.tolist()}, high={high.tolist()}"


def count_outside_action_box(actions: np.ndarray, bounds=DEFAULT_ACTION_BOUNDS) -> tuple[int, int | None]:
    """(number of action entries outside `bounds`, first row holding one, or None when there is none)."""
    low, high = (np.asarray(bound, dtype=np.float64) for bound in bounds)
    outside = (actions < low) | (actions > high)
    count = int(outside.sum())
    return count, (_first_bad_row(outside) if count else None)


def enforce_action_box(
    actions: np.ndarray, source: str, *, strict: bool = False, bounds=DEFAULT_ACTION_BOUNDS
) -> np.ndarray:
    """`actions` clipped to `bounds` (low, high: scalars or per-dimension arrays).

    Entries outside the box are clipped with a warning naming the source, their count and first row, or, with
    `strict=True`, refused with a `DatasetError` saying the same. In-box actions come back unchanged.
    """
    low, high = (np.asarray(bound, dtype=np.float64) for bound in bounds)
    for name, bound in (("low", low), ("high", high)):
        if bound.shape not in ((), (actions.shape[1],)):
            raise DatasetError(
                f"{source}: action bound '{name}' has shape {_shape_str(bound)}; actions have shape "
                f"{_shape_str(actions)}, so it must be a scalar or have shape [{actions.shape[1]}]"
            )
    if np.any(low > high):
        raise DatasetError(f"{source}: action bounds have low > high (low={low.tolist()}, high={high.tolist()})")
    count, first_index = count_outside_action_box(actions, (low, high))
    if not count:
        return actions
    where = (
        f"outside {_bounds_str(low, high)}, first at index {first_index} "
        f"(max |action| = {float(np.abs(actions).max()):.6g})"
    )
    if strict:
        raise DatasetError(
            f"{source}: key 'actions' has {count} value(s) {where}; "
            "refused in strict mode (--strict, strict=True); without it they are clipped with a warning"
        )
    warnings.warn(f"{source}: clipping {count} action value(s) {where}", UserWarning, stacklevel=3)
    return np.clip(actions, low, high).astype(actions.dtype, copy=False)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Aligned transitions (s, a, r, s', mask, terminal), all float32.

    `masks[i]` is 1.0 when the target may bootstrap from `next_observations[i]` and 0.0 at a true
    terminal. `terminals[i]` is 1.0 on the last transition of a trajectory (terminal or time-out), i.e.
    an episode boundary; it is *not* the bootstrap mask.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    masks: np.ndarray
    terminals: np.ndarray
    source: str = "<arrays>"

    def __post_init__(self):
        # Cheap structural check for direct construction; `from_arrays` does the full validation.
        for key in ARRAY_KEYS:
            value = getattr(self, key)
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                raise DatasetError(
                    f"{self.source}: field '{key}' must be a float32 numpy array "
                    f"(got {type(value).__name__} {getattr(value, 'dtype', '')}); build datasets with Dataset.from_arrays"
                )
        for key in _MATRIX_KEYS:
            if getattr(self, key).ndim != 2:
                raise DatasetError(f"{self.source}: field '{key}' must be 2-D, got shape {_shape_str(getattr(self, key))}")
        for key in _VECTOR_KEYS:
            if getattr(self, key).ndim != 1:
                raise DatasetError(f"{self.source}: field '{key}' must be 1-D, got shape {_shape_str(getattr(self, key))}")
        lengths = {key: len(getattr(self, key)) for key in ARRAY_KEYS}
        if len(set(lengths.values())) != 1:
            listing = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise DatasetError(f"{self.source}: arrays have different lengths ({listing})")
        if self.observations.shape[1] != self.next_observations.shape[1]:
            raise DatasetError(
                f"{self.source}: 'observations' {_shape_str(self.observations)} and 'next_observations' "
                f"{_shape_str(self.next_observations)} have different widths"
            )

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        source: str = "<arrays>",
        *,
        strict: bool = False,
        action_bounds=DEFAULT_ACTION_BOUNDS,
    ) -> Dataset:
        """Validate and convert a mapping of arrays into a `Dataset`.

        Required keys: observations, actions, rewards, next_observations, terminals. `masks` is optional
        and defaults to `1 - terminals`. Extra keys are ignored. Actions outside `action_bounds` (low, high:
        scalars or per-dimension arrays) are clipped with a warning, or refused when `strict` (see
        `enforce_action_box`). Raises `DatasetError` on anything else that is wrong.
        """
        source = str(source)
        if not isinstance(arrays, Mapping):
            raise DatasetError(f"{source}: expected a mapping of arrays by name, got {type(arrays).__name__}")
        raw = check_array_set(arrays, source, required=REQUIRED_KEYS, optional=("masks",), matrices=_MATRIX_KEYS,
                              vectors=_VECTOR_KEYS, flags=("terminals", "masks"))
        if raw["observations"].shape[1] != raw["next_observations"].shape[1]:
            raise DatasetError(
                f"{source}: key 'observations' has shape {_shape_str(raw['observations'])} but 'next_observations' "
                f"has shape {_shape_str(raw['next_observations'])}; their widths must match"
            )
        for key in ("observations", "actions"):
            if raw[key].shape[1] == 0:
                raise DatasetError(f"{source}: key '{key}' has zero width (shape {_shape_str(raw[key])})")

        converted = {key: np.asarray(value, dtype=np.float32) for key, value in raw.items()}
        for key, value in converted.items():
            check_finite(source, key, value)  # float32 overflow of finite float64 values
        if "masks" not in converted:
            converted["masks"] = 1.0 - converted["terminals"]  # masks default: bootstrap unless terminal

        converted["actions"] = enforce_action_box(converted["actions"], source, strict=strict, bounds=action_bounds)

        return cls(
            observations=np.ascontiguousarray(converted["observations"]),
            actions=np.ascontiguousarray(converted["actions"]),
            rewards=np.ascontiguousarray(converted["rewards"]),
            next_observations=np.ascontiguousarray(converted["next_observations"]),
            masks=np.ascontiguousarray(converted["masks"]),
            terminals=np.ascontiguousarray(converted["terminals"]),
            source=source,
        )

    @property
    def size(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return self.size

    def arrays(self) -> dict[str, np.ndarray]:
        """The six arrays by name (observations, actions, rewards, next_observations, masks, terminals)."""
        return {key: getattr(self, key) for key in ARRAY_KEYS}

    def content_sha256(self) -> str:
        """sha256 of the six arrays (names, shapes and float32 bytes): the same for the same transitions whatever file
        they came from, so runs can be told apart by the data they trained on (remade data differs between CPUs)."""
        digest = hashlib.sha256()
        for key, value in self.arrays().items():
            digest.update(f"{key}{value.shape}".encode())
            digest.update(value.tobytes())
        return digest.hexdigest()

    def next_actions(self) -> np.ndarray:
        """The dataset's action at the next step of the same trajectory, per transition (ReBRAC's critic penalty).

        Transitions are stored in trajectory order, so that is the next row's action, except on the last transition
        of a trajectory (`terminals` 1) and the dataset's last row, where the transition's own action stands in: the
        trajectory has no next action there (the FQL repository takes the next row's action, from the next trajectory).
        """
        following = np.concatenate([self.actions[1:], self.actions[-1:]])
        return np.where(self.terminals[:, None] > 0, self.actions, following)

    def return_range_scale(self, target_range: float = RETURN_RANGE) -> float:
        """The reward factor that makes the episode returns span `target_range`: target / (max - min episode return).

        The D4RL locomotion convention of IQL and VGF. Episodes are the spans ended by `terminals`; a last span
        without an end counts as an episode too.
        """
        ends = np.flatnonzero(self.terminals)
        starts = np.concatenate([[0], ends + 1])
        returns = np.add.reduceat(self.rewards.astype(np.float64), starts[starts < self.size])
        spread = float(returns.max() - returns.min())
        if not spread > 0.0:
            raise DatasetError(
                f"{self.source}: scaling rewards by the return range needs episodes with different returns; "
                f"all {len(returns)} episode(s) return {float(returns[0]):.6g}"
            )
        return target_range / spread

    def __repr__(self) -> str:
        return (
            f"Dataset(size={self.size}, obs_dim={self.obs_dim}, action_dim={self.action_dim}, "
            f"source={self.source!r})"
        )
