"""Vectorised, policy-agnostic evaluation over transport budgets.

The evaluator steps every episode of every budget together: with ``B`` budgets and ``N`` episodes it keeps
``E = B * N`` environments, and each environment step makes **one** policy call on the whole ``[E, obs_dim]`` batch
(row ``j * N + i`` is episode ``i`` of budget ``budgets[j]``). Episode ``i`` of every budget is reset with seed
``seed + i``, so budgets are compared on the same initial states (common random numbers). Each env runs exactly one
episode; a finished row keeps its last observation in the batch and its actions are ignored, so the policy always
sees a fixed batch shape (one jit compilation).

Env construction. ``evaluate`` needs ``E`` live envs. By default it calls ``env_fn`` ``E`` times and closes the
envs afterwards. Because repeated evaluations during training should not rebuild them, an :class:`EnvPool` can be
passed as ``envs=``: it builds envs on demand and keeps them for the next call (reset with fresh seeds each time).
Build cost matters mostly for OGBench manipulation envs: a from-scratch cube-single env takes ~1.4-2 s and
~150 MB, which is why ``vgf.envs.make_env`` hands out ~5-9 ms / ~1.5 MB clones of a cached prototype; with it,
building the 200 envs of a 4-budget x 50-episode evaluation takes about 2 s.

Stepping cost. An OGBench cube-single step costs ~2.5 ms of CPU (half MuJoCo, half OGBench's Python), so
evaluation time is dominated by the envs, not by this loop (~320 env-steps/s on one core). ``EnvPool(...,
workers=W)`` spreads the rows over ``W`` subprocesses that step in parallel, with identical results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np

PolicyFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""policy(observations [E, obs_dim] float32, budgets [E] int32) -> (actions [E, action_dim], aux).

``aux`` maps names to per-row float arrays [E] (e.g. 'displacement': how far the played action moved from its
reference sample). The policy owns its randomness. It receives a fresh observation array at every call.
"""

EvalResults = dict[int, dict[str, float]]


class EnvPool:
    """Environments built once with ``env_fn`` and reused across :func:`evaluate` calls.

    With ``workers=0`` (default) the envs live in this process: ``get(n)`` returns the first ``n``, building missing
    ones. With ``workers=W > 0`` they live in ``W`` subprocesses (row ``r`` of a batch is env ``r // W`` of worker
    ``r % W``) that step their shares in parallel; the envs are then not accessible from here and ``env_fn`` must be
    picklable (e.g. ``functools.partial(vgf.envs.make_env, task)``, not a lambda). Workers are started with the
    ``'spawn'`` method (safe next to JAX's threads), so a script using them needs the usual
    ``if __name__ == "__main__":`` guard; each takes a few seconds to start (imports, first env build). Results are
    identical with and without workers.

    Use as a context manager or call :meth:`close`. Not for concurrent use by two evaluations at once.
    """

    def __init__(self, env_fn: Callable[[], gymnasium.Env], workers: int = 0, start_method: str = "spawn"):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
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

    def step(self, rows: np.ndarray, actions: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step env ``r`` with ``actions[r]`` for each ``r`` in ``rows``, writing its observation into ``obs[r]``.

        Returns rewards, dones (terminated or truncated) and ``info['success']`` values (NaN where absent), aligned
        with ``rows``.
        """
        n = len(rows)
        rewards = np.empty(n, dtype=np.float64)
        dones = np.empty(n, dtype=bool)
        successes = np.empty(n, dtype=np.float64)
        step_fns = self.step_fns
        for k, r in enumerate(rows.tolist()):
            ob, reward, terminated, truncated, info = step_fns[r](actions[r])
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
                    local, actions, obs = args  # env indices, their actions and an observation buffer, row-aligned
                    rows = np.arange(len(local))
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


_THREAD_LIMIT_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class _WorkerGroup:
    """``W`` subprocesses, each owning envs ``0, 1, ...``; batch row ``r`` is env ``r // W`` of worker ``r % W``."""

    def __init__(self, env_fn: Callable[[], gymnasium.Env], workers: int, start_method: str):
        import multiprocessing as mp
        import weakref

        ctx = mp.get_context(start_method)
        self.workers = workers
        self.size = 0
        self._conns = []
        self._procs = []
        # Each worker is meant to use one core. OpenBLAS would otherwise start a thread per core in every worker and
        # its spinning threads fight over the cores (measured: 2 workers on 2 cores gave no speed-up at all). The
        # children inherit os.environ at start(), so set the limits just for the start-up (unless the user did).
        saved = {name: os.environ.get(name) for name in _THREAD_LIMIT_VARS}
        for name in _THREAD_LIMIT_VARS:
            os.environ.setdefault(name, "1")
        try:
            for _ in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, env_fn), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
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

    def step(self, rows: np.ndarray, actions: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = self.workers
        owner = rows % w
        picks = [np.flatnonzero(owner == k) for k in range(w)]
        active = [k for k in range(w) if picks[k].size]
        for k in active:
            sub = rows[picks[k]]
            # the worker's envs 0..m-1 are the batch rows k, k + w, ...; send only the rows being stepped
            local = sub // w
            self._conns[k].send(("step", local, actions[sub], obs[sub]))
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
) -> EvalResults:
    """Per-budget statistics from per-row totals laid out budget-major (row j * episodes + i).

    Success is reported only when some episode's env reported one (NaN marks those that did not, and count as 0).
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
        return _run_batched(backend, num, policy, budget_list, episodes, seed, max_episode_steps, progress, spec_limit)
    finally:
        if envs is None:
            pool.close()


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
) -> EvalResults:
    obs = backend.reset([seed + (r % episodes) for r in range(num)]).astype(np.float32)
    budget_arr = np.repeat(np.asarray(budget_list, dtype=np.int32), episodes)
    budget_arr.setflags(write=False)

    limit = max_episode_steps if max_episode_steps is not None else np.iinfo(np.int64).max
    active = np.ones(num, dtype=bool)
    success = np.zeros(num, dtype=np.float64)
    returns = np.zeros(num, dtype=np.float64)
    lengths = np.zeros(num, dtype=np.int64)
    aux_sums: dict[str, np.ndarray] = {}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        limits = [x for x in (max_episode_steps, spec_limit) if x]
        bar = tqdm(total=min(limits) if limits else None, desc=f"eval {len(budget_list)}x{episodes}", unit="step",
                   leave=False)
    try:
        rows = np.arange(num)
        while rows.size:
            actions, aux = policy(obs.copy(), budget_arr)
            actions = np.asarray(actions)
            for key, value in aux.items():
                value = np.broadcast_to(np.asarray(value, dtype=np.float64), (num,))
                sums = aux_sums.get(key)
                if sums is None:
                    sums = aux_sums[key] = np.zeros(num, dtype=np.float64)
                sums[rows] += value[rows]
            rewards, dones, successes = backend.step(rows, actions, obs)
            returns[rows] += rewards
            lengths[rows] += 1
            ended = dones | (lengths[rows] >= limit)
            finished = rows[ended]
            active[finished] = False
            success[finished] = successes[ended]
            rows = rows[~ended]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(active=int(rows.size), refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return _summarise(budget_list, episodes, success, returns, lengths, aux_sums)


def evaluate_sequential(
    env_fn: Callable[[], gymnasium.Env],
    policy: PolicyFn,
    budgets: Sequence[int],
    episodes: int,
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> EvalResults:
    """The plain reference loop: one env, one episode at a time, batch-1 policy calls.

    Same arguments, seeds and statistics as :func:`evaluate`; with a policy whose rows do not depend on each other
    the two return identical numbers. Slow: meant for tests and debugging.
    """
    budget_list = _check_args(budgets, episodes, max_episode_steps)
    num = len(budget_list) * episodes
    limit = max_episode_steps if max_episode_steps is not None else np.iinfo(np.int64).max
    success = np.zeros(num, dtype=np.float64)
    returns = np.zeros(num, dtype=np.float64)
    lengths = np.zeros(num, dtype=np.int64)
    aux_sums: dict[str, np.ndarray] = {}
    env = env_fn()
    try:
        for j, budget in enumerate(budget_list):
            budget_one = np.asarray([budget], dtype=np.int32)
            for i in range(episodes):
                r = j * episodes + i
                ob, _ = env.reset(seed=seed + i)
                while True:
                    actions, aux = policy(np.asarray(ob, dtype=np.float32)[None], budget_one)
                    for key, value in aux.items():
                        sums = aux_sums.setdefault(key, np.zeros(num, dtype=np.float64))
                        sums[r] += np.broadcast_to(np.asarray(value, dtype=np.float64), (1,))[0]
                    ob, reward, terminated, truncated, info = env.step(np.asarray(actions)[0])
                    returns[r] += reward
                    lengths[r] += 1
                    if terminated or truncated or lengths[r] >= limit:
                        success[r] = _final_success(info)
                        break
    finally:
        env.close()
    return _summarise(budget_list, episodes, success, returns, lengths, aux_sums)
