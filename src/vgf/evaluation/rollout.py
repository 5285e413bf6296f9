"""Vectorised, policy-agnostic evaluation over transport budgets.

The evaluator steps every episode of every budget together: with ``B`` budgets and ``N`` episodes it keeps
``E = B * N`` environments (row ``j * N + i`` is episode ``i`` of budget ``budgets[j]``). Episode ``i`` of every
budget is reset with seed ``seed + i``, so budgets are compared on the same initial states (common random numbers).
Each env runs exactly one episode; a finished episode leaves the batch, so the policy is only asked for the actions
of episodes still running.

Env construction. ``evaluate`` needs ``E`` live envs. By default it calls ``env_fn`` ``E`` times and closes the
envs afterwards. Because repeated evaluations during training should not rebuild them, an :class:`EnvPool` can be
passed as ``envs=``: it builds envs on demand and keeps them for the next call (reset with fresh seeds each time).
Build cost matters mostly for OGBench manipulation envs: a from-scratch cube-single env takes ~1.4-2 s and
~150 MB, which is why ``vgf.envs.make_env`` hands out ~5-9 ms / ~1.5 MB clones of a cached prototype.

Using the cores. An OGBench cube-single step costs ~2.3 ms of CPU (half MuJoCo, half OGBench's Python), more than
the policy's share of a step, so the envs set the pace. ``EnvPool(..., workers=W)`` spreads the rows over ``W``
subprocesses that step in parallel, and the evaluator then splits the running episodes into two lanes and
overlaps them: while the workers step one lane, this process computes the next actions of the other, so the wall
time approaches the larger of (policy, physics / W) instead of their sum. :func:`env_workers` sizes ``W`` to the
machine. The results are those of the serial loop whenever each episode's actions depend only on its own
observations and keys (as with ``vgf.training.make_policy``): splitting the batch changes nothing then.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np

PolicyFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""policy(observations [R, obs_dim] float32, budgets [R] int32, episodes [R] int32, steps [R] int32)
-> (actions [R, action_dim], aux), for ``R`` running episodes.

``episodes`` is each row's episode index ``i`` (shared by its budgets) and ``steps`` the steps it has taken, so a
policy can draw each episode's randomness from its own key. ``aux`` maps names to per-row float arrays [R] (e.g.
'displacement': how far the played action moved from its reference sample). The policy receives fresh arrays at
every call. A policy may carry an attribute ``rows_per_call`` (its compiled batch size): the lanes of a pipelined
evaluation are then cut in whole multiples of it, which spares padding.
"""

# {budget: {statistic: value}}; with per_episode=True also {'per_episode': {statistic: [one value per episode]}}
EvalResults = dict[int, dict[str, float | dict[str, list[float]]]]


WORKERS_VARIABLE = "VGF_ENV_WORKERS"
FRESH_START_METHODS = ("spawn", "forkserver")  # env workers start as new processes, not as copies of this one


def env_workers(requested: int | None = None, episode_steps: int | None = None) -> int:
    """How many env worker processes to use: ``requested`` when given, else sized to the machine.

    The machine's size is ``$VGF_ENV_WORKERS`` when set (a scheduler running several runs at once sets it to its
    share of the cores, e.g. cores // concurrent runs), else the cores this process may use. Tasks whose episodes
    last one step (the bandit) get none: there is no stepping to overlap, and starting processes would cost more than
    the whole evaluation.
    """
    if requested is not None:
        if requested < 0:
            raise ValueError(f"workers must be >= 0, got {requested}")
        return requested
    if episode_steps == 1:
        return 0
    if os.environ.get(WORKERS_VARIABLE):
        return max(0, int(os.environ[WORKERS_VARIABLE]))
    from vgf.envs import usable_cores

    return usable_cores()


class EnvPool:
    """Environments built once with ``env_fn`` and reused across :func:`evaluate` calls.

    With ``workers=0`` (default) the envs live in this process: ``get(n)`` returns the first ``n``, building missing
    ones. With ``workers=W > 0`` they live in ``W`` subprocesses (row ``r`` of a batch is env ``r // W`` of worker
    ``r % W``) that step their shares in parallel while this process computes actions (see the module's notes); the
    envs are then not accessible from here and ``env_fn`` must be picklable (e.g.
    ``functools.partial(vgf.envs.make_env, task)``, not a lambda). Workers are started with the ``'spawn'`` method
    (or ``'forkserver'``): fresh processes, never forks of this one, whose JAX threads and device memory a fork would
    copy mid-use. So a script using them needs the usual ``if __name__ == "__main__":`` guard; each takes a few
    seconds to start (imports, first env build). Results are identical with and without workers for policies whose
    rows do not depend on each other.

    Use as a context manager or call :meth:`close`. Not for concurrent use by two evaluations at once.
    """

    def __init__(self, env_fn: Callable[[], gymnasium.Env], workers: int = 0, start_method: str = "spawn"):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if start_method not in FRESH_START_METHODS:
            raise ValueError(f"start_method must be one of {FRESH_START_METHODS}, got {start_method!r}: a forked worker "
                             "would inherit this process's JAX, which is not safe to fork")
        self.env_fn = env_fn
        self.workers = workers
        self._envs: list[gymnasium.Env] = []
        self._remote: _WorkerGroup | None = None
        if workers:
            self._remote = _WorkerGroup(env_fn, workers, start_method)

    def get(self, n: int) -> list[gymnasium.Env]:
        """The first ``n`` in-process envs (only for ``workers=0``)."""
        if self._remote is not None:
            raise RuntimeError("EnvPool(workers>0) keeps its envs in subprocesses")
        while len(self._envs) < n:
            self._envs.append(self.env_fn())
        return self._envs[:n]

    def _backend(self, n: int) -> _LocalEnvs | _WorkerGroup:
        if self._remote is not None:
            self._remote.ensure(n)
            return self._remote
        return _LocalEnvs(self.get(n))

    def __len__(self) -> int:
        return self._remote.size if self._remote is not None else len(self._envs)

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
        if self._remote is not None:
            self._remote.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _final_success(info: dict) -> float:
    """The episode's final ``info['success']``; NaN where the env reports none (e.g. MuJoCo locomotion)."""
    return float(info.get("success", np.nan))


class _LocalEnvs:
    """Steps in-process envs; the interface the batched loop uses (also implemented by :class:`_WorkerGroup`)."""

    def __init__(self, envs: list[gymnasium.Env]):
        self.envs = envs
        self.step_fns = [env.step for env in envs]

    def reset(self, seeds: list[int]) -> np.ndarray:
        return np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)])

    def submit(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Start stepping env ``rows[k]`` with ``actions[k]``; :meth:`collect` finishes it (here: does it)."""
        self._pending = (rows, actions)

    def collect(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, actions = self._pending
        return self.step(rows, actions, obs)

    def step(self, rows: np.ndarray, actions: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step env ``rows[k]`` with ``actions[k]``, writing its observation into ``obs[rows[k]]``.

        Returns rewards, dones (terminated or truncated) and ``info['success']`` values (NaN where absent), aligned
        with ``rows``.
        """
        n = len(rows)
        rewards = np.empty(n, dtype=np.float64)
        dones = np.empty(n, dtype=bool)
        successes = np.empty(n, dtype=np.float64)
        step_fns = self.step_fns
        for k, r in enumerate(rows.tolist()):
            ob, reward, terminated, truncated, info = step_fns[r](actions[k])
            obs[r] = ob
            rewards[k] = reward
            dones[k] = terminated or truncated
            successes[k] = _final_success(info)
        return rewards, dones, successes


def _worker_main(conn, env_fn) -> None:
    """Subprocess loop: owns a list of envs and serves 'ensure' / 'reset' / 'step' / 'close' requests."""
    import traceback

    envs: list[gymnasium.Env] = []
    try:
        while True:
            cmd, *args = conn.recv()
            try:
                if cmd == "ensure":
                    while len(envs) < args[0]:
                        envs.append(env_fn())
                    conn.send(("ok", len(envs)))
                elif cmd == "reset":
                    conn.send(("ok", _LocalEnvs(envs[: len(args[0])]).reset(args[0])))
                elif cmd == "step":
                    local, actions = args  # env indices and their actions
                    rows = np.arange(len(local))
                    obs = np.empty((len(local),) + envs[0].observation_space.shape, dtype=np.float32)
                    rewards, dones, successes = _LocalEnvs([envs[i] for i in local.tolist()]).step(rows, actions, obs)
                    conn.send(("ok", (obs, rewards, dones, successes)))
                elif cmd == "close":
                    for env in envs:
                        env.close()
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        return


class _WorkerGroup:
    """``W`` subprocesses, each owning envs ``0, 1, ...``; batch row ``r`` is env ``r // W`` of worker ``r % W``."""

    def __init__(self, env_fn: Callable[[], gymnasium.Env], workers: int, start_method: str):
        import multiprocessing as mp
        import weakref

        from vgf.envs import one_thread_children

        ctx = mp.get_context(start_method)
        self.workers = workers
        self.size = 0
        self._conns = []
        self._procs = []
        with one_thread_children():  # each worker is meant to use one core
            for _ in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, env_fn), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs)

    def _gather(self, conns) -> list:
        replies = [conn.recv() for conn in conns]  # read every reply first so that the pipes stay in step
        for status, payload in replies:
            if status != "ok":
                raise RuntimeError(f"evaluation worker failed:\n{payload}")
        return [payload for _, payload in replies]

    def ensure(self, n: int) -> None:
        if n <= self.size:
            return
        per_worker = -(-n // self.workers)
        for conn in self._conns:
            conn.send(("ensure", per_worker))
        self._gather(self._conns)
        self.size = per_worker * self.workers

    def reset(self, seeds: list[int]) -> np.ndarray:
        w = self.workers
        parts = [seeds[k::w] for k in range(w)]
        active = [k for k in range(w) if parts[k]]
        for k in active:
            self._conns[k].send(("reset", parts[k]))
        results = self._gather([self._conns[k] for k in active])
        first = results[0]
        obs = np.empty((len(seeds),) + first.shape[1:], dtype=first.dtype)
        for k, part in zip(active, results):
            obs[k::w] = part
        return obs

    def submit(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Send each worker its share of ``rows`` (with ``actions[k]`` for ``rows[k]``) and return at once."""
        w = self.workers
        owner = rows % w
        picks = [np.flatnonzero(owner == k) for k in range(w)]
        active = [k for k in range(w) if picks[k].size]
        for k in active:
            # the worker's envs 0..m-1 are the batch rows k, k + w, ...; send only the rows being stepped
            self._conns[k].send(("step", rows[picks[k]] // w, actions[picks[k]]))
        self._pending = (rows, picks, active)

    def collect(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wait for the submitted steps; as :meth:`_LocalEnvs.step`."""
        rows, picks, active = self._pending
        rewards = np.empty(len(rows), dtype=np.float64)
        dones = np.empty(len(rows), dtype=bool)
        successes = np.empty(len(rows), dtype=np.float64)
        for k, (sub_obs, rew, done, succ) in zip(active, self._gather([self._conns[k] for k in active])):
            idx = picks[k]
            obs[rows[idx]] = sub_obs
            rewards[idx], dones[idx], successes[idx] = rew, done, succ
        return rewards, dones, successes

    def close(self) -> None:
        self._finalizer()
        self.size = 0


def _shutdown(conns, procs) -> None:
    for conn in conns:
        try:
            conn.send(("close",))
        except (OSError, ValueError):
            pass
    for conn, proc in zip(conns, procs):
        try:
            if conn.poll(10):
                conn.recv()
        except (EOFError, OSError):
            pass
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
        conn.close()


def _check_args(budgets: Sequence[int], episodes: int, max_episode_steps: int | None) -> list[int]:
    budget_list = [int(b) for b in budgets]
    if not budget_list:
        raise ValueError("budgets must not be empty")
    if len(set(budget_list)) != len(budget_list):
        raise ValueError(f"budgets must be distinct, got {budget_list}")
    if any(b < 0 for b in budget_list):
        raise ValueError(f"budgets must be >= 0, got {budget_list}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
    return budget_list


def _summarise(
    budgets: list[int],
    episodes: int,
    success: np.ndarray,
    returns: np.ndarray,
    lengths: np.ndarray,
    aux_sums: dict[str, np.ndarray],
    discounted: np.ndarray | None,
    aux_starts: dict[str, np.ndarray],
    per_episode: bool = False,
) -> EvalResults:
    """Per-budget statistics from per-row totals laid out budget-major (row j * episodes + i).

    With `discounted` (per-row discounted returns), also the discounted return and each aux at the first step.
    Success is reported only when some episode's env reported one (NaN marks those that did not, and count as 0).
    With `per_episode`, each budget's stats also hold the per-episode values under `'per_episode'`.
    """
    reported = not np.isnan(success).all()
    success = np.nan_to_num(success, nan=0.0)
    results: EvalResults = {}
    for j, budget in enumerate(budgets):
        rows = slice(j * episodes, (j + 1) * episodes)
        steps = float(lengths[rows].sum())
        stats = {"success": float(np.mean(success[rows])), "success_std": float(np.std(success[rows]))} if reported else {}
        stats |= {
            "return": float(np.mean(returns[rows])),
            "return_std": float(np.std(returns[rows])),
            "length": float(np.mean(lengths[rows])),
            "episodes": float(episodes),
        }
        for key, sums in aux_sums.items():
            stats[key] = float(sums[rows].sum() / steps)  # mean over all steps taken, each step weighted equally
        if discounted is not None:
            stats["discounted_return"] = float(np.mean(discounted[rows]))
            stats |= {f"{key}_start": float(np.mean(starts[rows])) for key, starts in aux_starts.items()}
        if per_episode:
            columns = ({"success": success} if reported else {}) | {"return": returns, "length": lengths}
            if discounted is not None:
                columns |= {"discounted_return": discounted} | {f"{key}_start": v for key, v in aux_starts.items()}
            stats["per_episode"] = {name: values[rows].tolist() for name, values in columns.items()}
        results[budget] = stats
    return results


def evaluate(
    env_fn: Callable[[], gymnasium.Env],
    policy: PolicyFn,
    budgets: Sequence[int],
    episodes: int,
    seed: int = 0,
    max_episode_steps: int | None = None,
    progress: bool = False,
    envs: EnvPool | None = None,
    discount: float | None = None,
    per_episode: bool = False,
) -> EvalResults:
    """Evaluate ``policy`` at every transport budget, all episodes of all budgets stepped as one batch.

    Args:
        env_fn: builds one environment (e.g. ``lambda: vgf.envs.make_env(task)``). Unused when ``envs`` is given.
        policy: see :data:`PolicyFn`; called once per environment step with all ``len(budgets) * episodes`` rows.
        budgets: distinct non-negative transport budgets (steps).
        episodes: episodes per budget; episode ``i`` is reset with seed ``seed + i`` for every budget.
        seed: base reset seed.
        max_episode_steps: optional cap on episode length, on top of the env's own termination / time limit. With
            ``None`` the env must end its episodes itself (OGBench envs and ``make_env`` envs do).
        progress: show a tqdm bar over environment steps.
        envs: optional :class:`EnvPool` to take (and keep) the envs from, so repeated evaluations reuse them.
        discount: with a discount, each budget's stats also get ``'discounted_return'`` (mean over episodes of
            ``sum_t discount^t r_t``) and, for each ``aux`` key, ``'<key>_start'``: its mean at the episodes' first
            step. With ``aux['q']``, the critic's value of the played action, ``q_start - discounted_return`` is the
            critic's value error at the initial states (its overestimation, when positive).
        per_episode: each budget's stats also get ``'per_episode'``: a list per statistic (``'success'``,
            ``'return'``, ``'length'``, and with a discount ``'discounted_return'`` and ``'<key>_start'``) of each
            episode's value, in episode order. Episode ``i`` starts from the same state at every budget, so budgets
            (and agents evaluated with the same seed) can be compared episode by episode.

    Returns:
        ``{budget: stats}`` with ``'success'`` (mean over episodes of the final ``info['success']``, 0 where absent;
        left out, with ``'success_std'``, when no episode's env reported one, as in MuJoCo locomotion),
        ``'return'`` (mean undiscounted return), ``'length'`` (mean episode length), ``'success_std'`` and
        ``'return_std'`` (population std over episodes), ``'episodes'``, and for each ``aux`` key its mean over all
        steps actually taken by that budget's episodes.
    """
    budget_list = _check_args(budgets, episodes, max_episode_steps)
    num = len(budget_list) * episodes
    pool = envs if envs is not None else EnvPool(env_fn)
    try:
        backend = pool._backend(num)
        spec_limit = None
        if isinstance(backend, _LocalEnvs):
            spec_limit = getattr(getattr(backend.envs[0], "spec", None), "max_episode_steps", None)
        return _run_batched(backend, num, policy, budget_list, episodes, seed, max_episode_steps, progress, spec_limit,
                            discount, per_episode)
    finally:
        if envs is None:
            pool.close()


def _lanes(num: int, episodes: int, count: int, rows_per_call: int) -> list[np.ndarray]:
    """Split the rows into ``count`` lanes of about equal policy and env work.

    Each budget's episodes go to the lanes in blocks of ``rows_per_call`` (whole policy calls), the first block of
    budget ``j`` to lane ``j % count``, so every lane holds every budget and, rows being dealt to the workers in
    turn, every worker's envs.
    """
    row = np.arange(num)
    lane = (row % episodes // rows_per_call + row // episodes) % count
    return [row[lane == k] for k in range(count)]


def _run_batched(
    backend: _LocalEnvs | _WorkerGroup,
    num: int,
    policy: PolicyFn,
    budget_list: list[int],
    episodes: int,
    seed: int,
    max_episode_steps: int | None,
    progress: bool,
    spec_limit: int | None,
    discount: float | None = None,
    per_episode: bool = False,
) -> EvalResults:
    obs = backend.reset([seed + (r % episodes) for r in range(num)]).astype(np.float32)
    budget_arr = np.repeat(np.asarray(budget_list, dtype=np.int32), episodes)
    episode_arr = np.tile(np.arange(episodes, dtype=np.int32), len(budget_list))

    limit = max_episode_steps if max_episode_steps is not None else np.iinfo(np.int64).max
    success = np.zeros(num, dtype=np.float64)
    returns = np.zeros(num, dtype=np.float64)
    lengths = np.zeros(num, dtype=np.int64)
    aux_sums: dict[str, np.ndarray] = {}
    discounted = np.zeros(num, dtype=np.float64)
    aux_starts: dict[str, np.ndarray] = {}

    def act(rows: np.ndarray) -> np.ndarray:
        actions, aux = policy(obs[rows], budget_arr[rows], episode_arr[rows], lengths[rows].astype(np.int32))
        first = lengths[rows] == 0
        for key, value in aux.items():
            sums = aux_sums.get(key)
            if sums is None:
                sums = aux_sums[key] = np.zeros(num, dtype=np.float64)
                aux_starts[key] = np.zeros(num, dtype=np.float64)
            value = np.broadcast_to(np.asarray(value, dtype=np.float64), (len(rows),))
            sums[rows] += value
            aux_starts[key][rows[first]] = value[first]
        return np.asarray(actions)

    def finish(rows: np.ndarray) -> np.ndarray:
        """Collect the submitted step of ``rows``; returns those still running."""
        rewards, dones, successes = backend.collect(obs)
        returns[rows] += rewards
        if discount is not None:
            discounted[rows] += discount ** lengths[rows] * rewards
        lengths[rows] += 1
        ended = dones | (lengths[rows] >= limit)
        success[rows[ended]] = successes[ended]
        return rows[~ended]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        limits = [x for x in (max_episode_steps, spec_limit) if x]
        bar = tqdm(total=min(limits) if limits else None, desc=f"eval {len(budget_list)}x{episodes}", unit="step",
                   leave=False)
    try:
        # With workers, two lanes take turns: the workers step one while this process computes the other's actions.
        # In-process envs have nothing to overlap with, and one lane is the plain loop.
        count = 2 if isinstance(backend, _WorkerGroup) and num > 1 else 1
        lanes = _lanes(num, episodes, count, getattr(policy, "rows_per_call", 1))
        lanes = [lane for lane in lanes if lane.size]
        actions = act(lanes[0])
        backend.submit(lanes[0], actions)
        current = 0
        while True:
            following = (current + 1) % len(lanes)
            next_actions = act(lanes[following]) if following != current and lanes[following].size else None
            lanes[current] = finish(lanes[current])
            if bar is not None:
                bar.update(int(lengths.max()) - bar.n)
                bar.set_postfix(active=sum(int(lane.size) for lane in lanes), refresh=False)
            if next_actions is None:  # one lane (or the other one done): step this one again
                if not lanes[current].size:
                    break
                following, next_actions = current, act(lanes[current])
            backend.submit(lanes[following], next_actions)
            current = following
    finally:
        if bar is not None:
            bar.close()
    return _summarise(budget_list, episodes, success, returns, lengths, aux_sums,
                      None if discount is None else discounted, aux_starts, per_episode)


def evaluate_sequential(
    env_fn: Callable[[], gymnasium.Env],
    policy: PolicyFn,
    budgets: Sequence[int],
    episodes: int,
    seed: int = 0,
    max_episode_steps: int | None = None,
    discount: float | None = None,
    per_episode: bool = False,
) -> EvalResults:
    """The plain reference loop: one env, one episode at a time, batch-1 policy calls.

    Same arguments, seeds and statistics as :func:`evaluate`; with a policy whose rows do not depend on each other
    the two return identical numbers. Slow: meant for tests, debugging and as the benchmarks' baseline.
    """
    budget_list = _check_args(budgets, episodes, max_episode_steps)
    num = len(budget_list) * episodes
    limit = max_episode_steps if max_episode_steps is not None else np.iinfo(np.int64).max
    success = np.zeros(num, dtype=np.float64)
    returns = np.zeros(num, dtype=np.float64)
    lengths = np.zeros(num, dtype=np.int64)
    aux_sums: dict[str, np.ndarray] = {}
    discounted = np.zeros(num, dtype=np.float64)
    aux_starts: dict[str, np.ndarray] = {}
    env = env_fn()
    try:
        for j, budget in enumerate(budget_list):
            budget_one = np.asarray([budget], dtype=np.int32)
            for i in range(episodes):
                r = j * episodes + i
                ob, _ = env.reset(seed=seed + i)
                while True:
                    actions, aux = policy(np.asarray(ob, dtype=np.float32)[None], budget_one, np.asarray([i], np.int32),
                                          np.asarray([lengths[r]], np.int32))
                    for key, value in aux.items():
                        value = np.broadcast_to(np.asarray(value, dtype=np.float64), (1,))[0]
                        aux_sums.setdefault(key, np.zeros(num, dtype=np.float64))[r] += value
                        if lengths[r] == 0:
                            aux_starts.setdefault(key, np.zeros(num, dtype=np.float64))[r] = value
                    ob, reward, terminated, truncated, info = env.step(np.asarray(actions)[0])
                    returns[r] += reward
                    if discount is not None:
                        discounted[r] += discount ** lengths[r] * reward
                    lengths[r] += 1
                    if terminated or truncated or lengths[r] >= limit:
                        success[r] = _final_success(info)
                        break
    finally:
        env.close()
    return _summarise(budget_list, episodes, success, returns, lengths, aux_sums,
                      None if discount is None else discounted, aux_starts, per_episode)
