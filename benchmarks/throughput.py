"""Throughput benchmark for vgf: training updates/s, compile time, evaluation env-steps/s, a per-part profile of
one update, and how close an update gets to this machine's float32 matmul speed.

    python benchmarks/throughput.py                 # full run (paper + cpu-small), ~4.5-6 min on a 2-core CPU
    python benchmarks/throughput.py --quick         # ~1-1.5 min smoke run (cpu-small only, short evaluation)
    python benchmarks/throughput.py --presets cpu-small,cpu-small+bf16 --json runs/throughput.json

Output: one `# ...` header line (machine, versions, date, load), then one `name: value` line per figure, printed as
soon as it is measured. A preset name may carry `+bf16` to benchmark it with `bf16=True`.

Figures (times are wall-clock; every timed region ends with `jax.block_until_ready`, since JAX dispatches
asynchronously):

- `matmul_gflops`: float32 1024x1024 `jnp.dot`, best of 5 timed rounds, measured at the start and again at the end
  (`matmul_gflops_end`); the roofline below uses the larger of the two;
  `matmul_gflops_bf16` the same in bfloat16; `matmul_gflops/mlp/<preset>` the [batch*particles, H] x [H, H] shape
  that dominates an update.
- `compile_s/<preset>`: ahead-of-time compile of `train_chunk` (lower + compile).
- `updates_per_s/<preset>`: `train_chunk` on 100k random transitions (obs 28, act 5, the cube-single dims), after a
  warm-up call of the same compiled chunk: all timed updates / all their time (`updates_per_s_best`: fastest chunk).
- `seed_updates_per_s/<preset>/4_seeds`: 4 seeds trained in one process (`train_chunk_seeds`: `vmap` over the stacked
  agent states, what `vgf train --seeds 0,1,2,3` runs), in seed-updates/s; `vmapped_seeds_speedup/<preset>/4_seeds`
  is that over the one-seed `updates_per_s/<preset>` (`--seeds N` changes the count, `--seeds 1` skips it).
- `updates_per_s_ceiling/<preset>`: the most updates/s this machine could give if every FLOP of the update ran at
  the measured rate of the preset's hidden-layer product: `matmul_gflops/mlp/<preset> / update_gflop` (a roofline
  bound, not a measurement).
- `update_gflop/<preset>`: FLOPs of one update, from XLA's cost analysis (see `xla_update_flops` for how loops are
  counted) or, if that is unavailable, the analytic matmul count (`update_gflop_analytic/<preset>`, always shown).
  `update_gflops/<preset>` = that count x updates/s; `roofline_fraction/<preset>` = the same for the fastest chunk
  over the best matmul rate (both best-case, so that outside load cancels as far as it can).
- `profile/<preset>/...`: the agent's own pieces, each jitted alone on one batch of `batch_size`, timed in turn
  for several rounds, fastest time of each:
  `reference_sampling_ms` (`agent.sample_reference`: `bc_flow_steps` Euler steps of the flow for B x N particles),
  `transport_ms` (`agent.transport`: `train_vgf_steps` SVGD steps), `full_update_ms` (`agent.update`), and
  `rest_ms` = full - reference - transport (target Q, critic loss/grad, flow-matching BC step, Adam, target update).
- `eval_*`: one evaluation (`vgf.evaluation.evaluate` with `vgf.training.make_policy`, as `evaluate_agent` does) of
  an untrained agent on the task, `--eval-episodes` x budgets (0, 1, 2, 4), env workers sized to the machine (as
  `vgf train`; `--eval-workers` to choose), envs built and programs compiled beforehand (what every periodic
  evaluation of `vgf train` after the first costs; the first also pays `eval_env_build_s` + `eval_act_compile_s`).
  Measured side by side with `eval_seconds_loop`: the reference's loop (`evaluate_sequential`: one env, one episode
  after another, a batch-1 `act` per step with the episode's budget) over the same agent, episodes and budgets;
  `eval_speedup_vs_loop` = loop / ours. `eval_env_step_ms` is the loop's env time per step (its time outside the
  policy), `eval_env_floor_s` = env steps x that / cores (the envs alone, every core busy) and
  `eval_seconds_over_floor` = ours / floor. `eval_policy_s` (and `_loop`) = seconds spent inside the policy (ours
  overlaps them with env stepping). `--eval-paper` adds the same lines for the paper preset (suffix `/paper`).
- `data_make_*`: the command `vgf data make cube-single-play` of `--data-episodes` episodes, run as a fresh process
  with `--workers 0` (`_seconds_serial`) and with its default of one worker per core (`_seconds`);
  `data_make_speedup` = serial / parallel (the files are compared too).
- `*_cpu_s`: CPU seconds (user + system, the process and its workers) of the same measurements. On Linux with
  sched_autogroup, a session competing with other busy sessions gets its share of the CPU whatever its process
  count, so under such load the wall-clock speed-ups fall towards the ratio of these.
- `peak_rss_mb`: peak resident memory of this process (and `peak_rss_children_mb` for eval workers).

The 2-core figures are sensitive to anything else running on the machine: the header prints the load average at
the start and a `# load average at end` line closes the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

OBS_DIM, ACTION_DIM = 28, 5  # cube-single
BUDGETS = (0, 1, 2, 4)
RESULTS: dict[str, object] = {}
UPDATE_GFLOPS_BEST: dict[str, float] = {}  # per preset, from the fastest chunk: compared with the best matmul


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = float(f"{value:.4g}") if abs(value) < 1e6 else round(value)
    RESULTS[name] = value
    print(f"{name}: {value}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


# ----------------------------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import vgf

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            autogroup = f.read().strip() == "1"
    except OSError:
        autogroup = False
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "vgf": vgf.__version__,
        "load_average_1_5_15": load,
        "sched_autogroup": autogroup,
    }


# ----------------------------------------------------------------------------------------------- helpers


def cpu_seconds(pids) -> float:
    """CPU seconds (user + system, all threads) that the live processes `pids` have used so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name: fields 3, 4, ... of the line
        total += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def block(tree):
    return jax.block_until_ready(tree)


def timed(fn, *args):
    """(seconds, result) of one blocking call."""
    began = time.perf_counter()
    out = block(fn(*args))
    return time.perf_counter() - began, out


def parse_preset(spec: str):
    """'paper', 'cpu-small+bf16' or 'avgf:cpu-small' -> (label, agent module, config); the agent defaults to vgf."""
    from vgf.agents import get_agent

    agent_name, _, rest = spec.rpartition(":")
    if agent_name not in ("", "vgf", "avgf"):
        raise SystemExit(f"unknown agent {agent_name!r} in {spec!r}: this benchmark times vgf and avgf")
    module = get_agent(agent_name or "vgf")
    name, *flags = rest.split("+")
    if name not in module.PRESETS:
        raise SystemExit(f"unknown preset {name!r}; valid: {', '.join(module.PRESETS)} (optionally with +bf16)")
    config = module.PRESETS[name]
    for flag in flags:
        if flag != "bf16":
            raise SystemExit(f"unknown preset modifier +{flag} (only +bf16)")
        config = dataclasses.replace(config, bf16=True)
    return spec, module, config.validate()


def random_data(size: int, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    terminals = (rng.random(size) < 0.005).astype(np.float32)
    arrays = {
        "observations": rng.standard_normal((size, OBS_DIM), dtype=np.float32),
        "actions": rng.uniform(-1.0, 1.0, (size, ACTION_DIM)).astype(np.float32),
        "rewards": -(rng.random(size) < 0.9).astype(np.float32),
        "next_observations": rng.standard_normal((size, OBS_DIM), dtype=np.float32),
        "masks": 1.0 - terminals,
        "terminals": terminals,
    }
    return {name: jnp.asarray(a) for name, a in arrays.items()}


# ----------------------------------------------------------------------------------------------- matmul roofline


def matmul_gflops(n: int, dtype, min_time: float, m: int | None = None, k: int | None = None) -> float:
    """GFLOP/s of an [m, k] x [k, n] product (square n x n by default): best of 5 rounds of >= min_time / 5 each."""
    m, k = m or n, k or n
    a = jax.random.normal(jax.random.PRNGKey(0), (m, k), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n), dtype)
    dot = jax.jit(jnp.dot)
    block(dot(a, b))
    flops = 2.0 * m * n * k
    best = 0.0
    for _ in range(5):
        reps, began = 0, time.perf_counter()
        while time.perf_counter() - began < min_time / 5:
            block(dot(a, b))
            reps += 1
        best = max(best, flops * reps / (time.perf_counter() - began) / 1e9)
    return best


# ----------------------------------------------------------------------------------------------- FLOP counts


def mlp_flops(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> float:
    dims = (in_dim, *hidden, out_dim)
    return 2.0 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def analytic_flops(config) -> dict[str, float]:
    """Matmul FLOPs of one update (forward = 2 m n k; a backward pass ~ 1x forward for input gradients only,
    ~2x for input + weight gradients). Elementwise ops (ReLU, LayerNorm, Adam, SVGD kernel) are ignored."""
    B, N = config.batch_size, config.num_particles
    critic = config.ensemble_size * mlp_flops(OBS_DIM + ACTION_DIM, config.hidden_dims, 1)
    flow = mlp_flops(OBS_DIM + ACTION_DIM + 1, config.hidden_dims, ACTION_DIM)
    parts = {
        "reference": B * N * config.bc_flow_steps * flow,
        "transport": config.train_vgf_steps * B * N * 2 * critic,  # forward + input-gradient backward
        "target_q": B * N * critic,
        "critic_step": B * 3 * critic,
        "flow_step": B * 3 * flow,
    }
    if config.discount == 0:
        parts["reference"] = parts["transport"] = parts["target_q"] = 0.0
    parts["total"] = sum(parts.values())
    return parts


def cost_flops(lowered) -> float | None:
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend / version provides it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def xla_update_flops(agent, batch, piece_fns) -> dict[str, float] | None:
    """FLOPs of one update from XLA's cost analysis.

    XLA counts the body of a loop (the flow's `fori_loop`, the transport's `scan`) once, whatever the trip count.
    So the update, the reference sampling and the transport are lowered with 1 Euler step and 1 transport step
    (exact: a loop of one iteration), and the missing (steps - 1) iterations are added from the one-step pieces.
    """
    config = agent.config
    flow_steps, vgf_steps = config.bc_flow_steps, config.train_vgf_steps
    one = dataclasses.replace(config, bc_flow_steps=1, train_vgf_steps=min(vgf_steps, 1))
    agent1 = agent.replace(config=one)
    reference_fn, transport_fn = piece_fns
    obs = batch["next_observations"]
    particles = jnp.zeros((obs.shape[0], config.num_particles, ACTION_DIM))
    update1 = cost_flops(jax.jit(lambda a, b: a.update(b)).lower(agent1, batch))
    reference1 = cost_flops(reference_fn.lower(agent1, obs, jax.random.PRNGKey(0)))
    transport1 = cost_flops(transport_fn.lower(agent1, obs, particles)) if vgf_steps else 0.0
    if update1 is None or reference1 is None or transport1 is None:
        return None
    uses_next = config.discount > 0
    reference = reference1 * flow_steps if uses_next else 0.0
    transport = transport1 * vgf_steps if uses_next else 0.0
    total = update1 + (reference - reference1 + transport - transport1 if uses_next else 0.0)
    return {"total": total, "reference": reference, "transport": transport}


# ----------------------------------------------------------------------------------------------- training


def bench_preset(label: str, module, config, data, quick: bool) -> None:
    from vgf.training.offline import train_chunk

    agent = module.create(config, OBS_DIM, ACTION_DIM, seed=0)
    B = config.batch_size
    heavy = analytic_flops(config)["total"] > 3e10  # the paper preset: ~1e11 FLOP per update
    chunk = (2 if heavy else 10) if not quick else (1 if heavy else 5)
    target_time = 4.0 if quick else 10.0

    emit(f"matmul_gflops/mlp/{label}", matmul_gflops(
        config.hidden_dims[-1], jnp.bfloat16 if config.bf16 else jnp.float32, 0.6 if quick else 1.5,
        m=B * config.num_particles, k=config.hidden_dims[-1]))

    # ---- train_chunk: compile, warm up, time
    key = jax.random.PRNGKey(1)
    began = time.perf_counter()
    compiled = train_chunk.lower(agent, data, key, chunk, B).compile()
    emit(f"compile_s/{label}", time.perf_counter() - began)
    warm, (agent, _) = timed(compiled, agent, data, jax.random.fold_in(key, 0))
    times = []
    while not times or (sum(times) + warm < target_time and len(times) < 20):
        seconds, (agent, info) = timed(compiled, agent, data, jax.random.fold_in(key, len(times) + 1))
        times.append(seconds)
    updates_per_s = chunk * len(times) / sum(times)
    emit(f"updates_per_s/{label}", updates_per_s)
    emit(f"updates_per_s_best/{label}", chunk / min(times))
    emit(f"update_ms/{label}", 1e3 / updates_per_s)
    note(f"{label}: {chunk * len(times)} timed updates in {len(times)} chunk(s) of {chunk} "
         f"(warm-up chunk {warm:.2f}s, chunk times {min(times):.2f}-{max(times):.2f}s); "
         f"critic_loss {float(info['critic_loss']):.3g}")

    # ---- per-part profile on one batch: the pieces are timed in turn, round after round, and each keeps its
    # fastest time, so that a burst of load from elsewhere does not land on one piece only
    index = jax.random.randint(jax.random.PRNGKey(2), (B,), 0, data["observations"].shape[0])
    batch = {name: x[index] for name, x in data.items()}
    obs = batch["next_observations"]
    reference_fn = jax.jit(lambda a, o, k: a.sample_reference(o, k, a.config.num_particles))
    transport_fn = jax.jit(lambda a, o, p: a.transport(o, p, a.config.train_vgf_steps))
    update_fn = jax.jit(lambda a, b: a.update(b))
    sample_key = jax.random.PRNGKey(3)
    particles = block(reference_fn(agent, obs, sample_key))
    began = time.perf_counter()
    update_compiled = update_fn.lower(agent, batch).compile()
    update_compile_s = time.perf_counter() - began
    pieces = {"reference": (reference_fn, (agent, obs, sample_key)), "full": (update_compiled, (agent, batch))}
    if config.train_vgf_steps:
        pieces["transport"] = (transport_fn, (agent, obs, particles))
    for fn, fn_args in pieces.values():
        block(fn(*fn_args))  # compile / warm up
    best = {name: float("inf") for name in pieces}
    min_time, rounds, began = (1.0 if quick else 4.0), 0, time.perf_counter()
    while rounds < 2 or (time.perf_counter() - began < min_time and rounds < 20):
        for name, (fn, fn_args) in pieces.items():
            best[name] = min(best[name], timed(fn, *fn_args)[0])
        rounds += 1
    reference_s, transport_s, full_s = best["reference"], best.get("transport", 0.0), best["full"]
    prefix = f"profile/{label}"
    emit(f"{prefix}/reference_sampling_ms", reference_s * 1e3)
    emit(f"{prefix}/transport_ms", transport_s * 1e3)
    emit(f"{prefix}/full_update_ms", full_s * 1e3)
    emit(f"{prefix}/rest_ms", (full_s - reference_s - transport_s) * 1e3)
    emit(f"{prefix}/reference_sampling_share", reference_s / full_s)
    emit(f"{prefix}/transport_share", transport_s / full_s)
    emit(f"{prefix}/update_compile_s", update_compile_s)
    note(f"{label}: profile = fastest of {rounds} rounds")

    # ---- FLOPs and roofline
    analytic = analytic_flops(config)
    xla = xla_update_flops(agent, batch, (reference_fn, transport_fn))
    emit(f"update_gflop_analytic/{label}", analytic["total"] / 1e9)
    if xla is not None:
        emit(f"update_gflop_xla/{label}", xla["total"] / 1e9)
    flops = xla["total"] if xla is not None else analytic["total"]
    note(f"{label}: FLOP count from {'XLA cost analysis (loop-corrected)' if xla is not None else 'analytic matmul count'}; "
         f"analytic split: reference {analytic['reference'] / analytic['total']:.0%}, "
         f"transport {analytic['transport'] / analytic['total']:.0%}, target Q {analytic['target_q'] / analytic['total']:.0%}, "
         f"critic step {analytic['critic_step'] / analytic['total']:.0%}, flow step {analytic['flow_step'] / analytic['total']:.0%}")
    emit(f"update_gflop/{label}", flops / 1e9)
    emit(f"updates_per_s_ceiling/{label}", RESULTS[f"matmul_gflops/mlp/{label}"] * 1e9 / flops)
    emit(f"update_gflops/{label}", flops * updates_per_s / 1e9)
    UPDATE_GFLOPS_BEST[label] = flops * chunk / min(times) / 1e9
    ref_flops = xla["reference"] if xla is not None else analytic["reference"]
    tr_flops = xla["transport"] if xla is not None else analytic["transport"]
    emit(f"{prefix}/reference_sampling_gflops", ref_flops / reference_s / 1e9)
    if config.train_vgf_steps:
        emit(f"{prefix}/transport_gflops", tr_flops / transport_s / 1e9)
    rest_s = full_s - reference_s - transport_s
    if rest_s > 0:
        emit(f"{prefix}/rest_gflops", (flops - ref_flops - tr_flops) / rest_s / 1e9)


def bench_seeds(label: str, module, config, data, seeds: int, quick: bool) -> None:
    """Seed-updates/s of `seeds` agents trained in one process by `train_chunk_seeds` (vmap over the stacked agent
    states, as `vgf train --seeds`), and its ratio to the one-seed `updates_per_s` measured just before."""
    from vgf.training.offline import train_chunk_seeds
    from vgf.training.run import chunk_key

    create_all = jax.jit(jax.vmap(module.create, in_axes=(None, None, None, 0)), static_argnums=(0, 1, 2))
    agents = create_all(config, OBS_DIM, ACTION_DIM, jnp.arange(seeds, dtype=jnp.int32))
    heavy = analytic_flops(config)["total"] > 3e10
    chunk = (1 if heavy else 5) if quick else (2 if heavy else 10)
    target_time = 4.0 if quick else 10.0

    def keys(step):
        return jnp.stack([chunk_key(seed, step) for seed in range(seeds)])

    compiled = train_chunk_seeds.lower(agents, data, keys(0), chunk, config.batch_size).compile()
    timed(compiled, agents, data, keys(0))  # warm-up
    times = []
    while not times or (sum(times) < target_time and len(times) < 20):
        seconds, (agents, _) = timed(compiled, agents, data, keys(len(times) + 1))
        times.append(seconds)
    seed_updates_per_s = seeds * chunk * len(times) / sum(times)
    emit(f"seed_updates_per_s/{label}/{seeds}_seeds", seed_updates_per_s)
    emit(f"seed_updates_per_s_best/{label}/{seeds}_seeds", seeds * chunk / min(times))
    emit(f"vmapped_seeds_speedup/{label}/{seeds}_seeds", seed_updates_per_s / RESULTS[f"updates_per_s/{label}"])
    note(f"{label}: {seeds} seeds vmapped, {len(times)} chunk(s) of {chunk} updates each; speedup = seed-updates/s over "
         f"the 1-seed updates/s above (>1: the seeds share the cores better than one seed alone uses them)")


# ----------------------------------------------------------------------------------------------- evaluation


def bench_eval(label: str, config, task: str, episodes: int, max_episode_steps: int | None, pool) -> None:
    """Our evaluation and the reference's loop, side by side on one agent, episodes and budgets."""
    from vgf.agents import vgf
    from vgf.envs import make_env, usable_cores
    from vgf.evaluation import evaluate, evaluate_sequential
    from vgf.training.policy import ROWS_PER_CALL, make_policy, row_key

    agent = vgf.create(config, OBS_DIM, ACTION_DIM, seed=0)
    suffix = "" if label == "cpu-small" else f"/{label}"
    base = jax.random.PRNGKey(0)

    @functools.partial(jax.jit, static_argnames=("budget",))
    def act_one(agent, observation, episode, step, budget: int):
        # one state, its episode's key, no budget masking: the reference's call
        return agent.act(observation, row_key(base, episode, step), max_steps=budget)

    def loop_policy(observations, budgets, episodes_, steps):
        actions, aux = act_one(agent, observations, episodes_[0], steps[0], int(budgets[0]))
        return np.asarray(actions), {name: np.asarray(value) for name, value in aux.items()}

    policy = make_policy(agent, seed=0, budgets=BUDGETS)
    zeros = np.zeros(ROWS_PER_CALL, np.int32)
    began = time.perf_counter()
    policy(np.zeros((ROWS_PER_CALL, OBS_DIM), np.float32), zeros + max(BUDGETS), zeros, zeros)  # the one program
    for budget in BUDGETS:
        loop_policy(np.zeros((1, OBS_DIM), np.float32), np.array([budget]), zeros[:1], zeros[:1])
    emit(f"eval_act_compile_s{suffix}", time.perf_counter() - began)

    def timed(fn, inside):
        def wrapped(*args):
            began = time.perf_counter()
            out = fn(*args)  # numpy out: the device work is finished
            inside["seconds"] += time.perf_counter() - began
            inside["calls"] += 1
            return out

        wrapped.rows_per_call = getattr(fn, "rows_per_call", 1)
        return wrapped

    ours, loop = {"seconds": 0.0, "calls": 0}, {"seconds": 0.0, "calls": 0}
    pids = [os.getpid(), *(proc.pid for proc in (pool._remote._procs if pool._remote else []))]
    began, cpu_began = time.perf_counter(), cpu_seconds(pids)
    results = evaluate(None, timed(policy, ours), list(BUDGETS), episodes, seed=0, max_episode_steps=max_episode_steps,
                       envs=pool)
    seconds, cpu = time.perf_counter() - began, cpu_seconds(pids) - cpu_began
    loop_env = make_env(task)  # built beforehand, as the pool's envs are
    began, cpu_began = time.perf_counter(), cpu_seconds([os.getpid()])
    reference = evaluate_sequential(lambda: loop_env, timed(loop_policy, loop), list(BUDGETS), episodes, seed=0,
                                    max_episode_steps=max_episode_steps)
    loop_seconds, loop_cpu = time.perf_counter() - began, cpu_seconds([os.getpid()]) - cpu_began

    env_steps = sum(stats["length"] * episodes for stats in results.values())
    loop_steps = sum(stats["length"] * episodes for stats in reference.values())
    bare_step_s = (loop_seconds - loop["seconds"]) / loop_steps  # the loop's env time per step: one env, nothing else
    cores = usable_cores()
    floor = env_steps * bare_step_s / cores
    emit(f"eval_seconds{suffix}", seconds)
    emit(f"eval_seconds_loop{suffix}", loop_seconds)
    emit(f"eval_speedup_vs_loop{suffix}", loop_seconds / seconds)
    emit(f"eval_env_steps{suffix}", int(round(env_steps)))
    emit(f"eval_env_steps_per_s{suffix}", env_steps / seconds)
    emit(f"eval_env_step_ms{suffix}", 1e3 * bare_step_s)
    emit(f"eval_env_floor_s{suffix}", floor)
    emit(f"eval_seconds_over_floor{suffix}", seconds / floor)
    emit(f"eval_policy_s{suffix}", ours["seconds"])
    emit(f"eval_policy_s_loop{suffix}", loop["seconds"])
    emit(f"eval_cpu_s{suffix}", cpu)
    emit(f"eval_cpu_s_loop{suffix}", loop_cpu)
    success = ", ".join(f"{budget}: {stats['success']:.2f}" for budget, stats in results.items())
    note(f"eval {label}: {episodes} episodes x budgets {list(BUDGETS)}, {ours['calls']} policy calls (ours, policy "
         f"time overlapped with env stepping) vs {loop['calls']} batch-1 calls (loop); env workers={pool.workers}, "
         f"{cores} cores; floor = env steps x the loop's env step time / cores; max_episode_steps="
         f"{max_episode_steps or 'env default'}; success by budget {success}")


def bench_data_make(episodes: int, steps: int) -> None:
    """`vgf data make` as a user runs it (a fresh process each, so each pays its start-up and env builds), on one
    core and with one worker per core, same seed: the seconds of each and whether the files match."""
    import subprocess
    import tempfile

    from vgf.envs import usable_cores

    with tempfile.TemporaryDirectory() as directory:
        seconds, cpu = {}, {}
        for name, workers in (("serial", 0), ("parallel", None)):
            command = [sys.executable, "-c", "import sys; from vgf.cli import main; sys.exit(main())", "data", "make",
                       "cube-single-play", "--episodes", str(episodes), "--max-episode-steps", str(steps),
                       "--seed", "0", "--out", os.path.join(directory, name)]
            if workers is not None:
                command += ["--workers", str(workers)]
            began, cpu_began = time.perf_counter(), children_cpu_seconds()
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode:
                raise SystemExit(f"data make ({name}) failed with exit {finished.returncode}:\n{finished.stderr}")
            seconds[name], cpu[name] = time.perf_counter() - began, children_cpu_seconds() - cpu_began
        same = all(open(os.path.join(directory, "serial", f), "rb").read() == open(os.path.join(directory, "parallel", f), "rb").read()
                   for f in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"))
    emit("data_make_seconds_serial", seconds["serial"])
    emit("data_make_seconds", seconds["parallel"])
    emit("data_make_speedup", seconds["serial"] / seconds["parallel"])
    emit("data_make_cpu_s_serial", cpu["serial"])
    emit("data_make_cpu_s", cpu["parallel"])
    note(f"data make: `vgf data make cube-single-play`, {episodes} episodes (+{max(1, episodes // 10)} val) of {steps} "
         f"steps, --workers 0 vs the default ({usable_cores()} workers), each a fresh process; files byte-identical: {same}")


# ----------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run (cpu-small only, short evaluation)")
    parser.add_argument("--presets", default=None, help="comma-separated presets, '+bf16' suffix allowed "
                        "(default: paper,cpu-small,avgf:cpu-small; with --quick: cpu-small); avgf:PRESET times amortised VGF")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per budget (default 50; --quick: 2)")
    parser.add_argument("--eval-max-steps", type=int, default=None,
                        help="cap on episode length (default: the env's own, 200 for cube-single; --quick: 50)")
    parser.add_argument("--eval-workers", type=int, default=None,
                        help="EnvPool subprocesses for evaluation (default: one per core, as vgf train)")
    parser.add_argument("--data-episodes", type=int, default=None, help="episodes of the data_make figures (default 20; "
                        "--quick: 4; 0: skip)")
    parser.add_argument("--data-steps", type=int, default=None, help="steps per episode there (default 1001; --quick: 100)")
    parser.add_argument("--eval-paper", action="store_true", help="also time an evaluation with the paper preset")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation figures")
    parser.add_argument("--task", default="cube-single-play-singletask-task1")
    parser.add_argument("--data-size", type=int, default=100_000, help="random transitions to sample batches from")
    parser.add_argument("--seeds", type=int, default=4, help="also time this many seeds vmapped in one process (1: skip)")
    parser.add_argument("--seed-presets", default="paper,cpu-small", help="presets to time with --seeds vmapped seeds")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write machine info, settings and figures here")
    args = parser.parse_args(argv)

    presets = args.presets or ("cpu-small" if args.quick else "paper,cpu-small,avgf:cpu-small")
    episodes = args.eval_episodes or (2 if args.quick else 50)
    max_steps = args.eval_max_steps or (50 if args.quick else None)
    seed_presets = {p.strip() for p in args.seed_presets.split(",")}
    specs = [parse_preset(p.strip()) for p in presets.split(",") if p.strip() and p.strip() != "none"]

    started = time.perf_counter()
    info = machine_info()
    note(f"vgf throughput | {info['date']} | {info['cpu_count']} CPUs ({info['cpus_usable']} usable), {info['cpu_model']} | "
         f"jax {info['jax']} backend {info['jax_backend']} | python {info['python']} | {info['platform']} | "
         f"load avg {info['load_average_1_5_15']}")
    if info["load_average_1_5_15"] and info["load_average_1_5_15"][0] > 0.5 * (info["cpus_usable"] or 1):
        note("warning: the machine is busy (load average above half the CPUs); figures will be low and noisy")
        if info["sched_autogroup"]:
            note("the kernel shares the CPU between sessions (sched_autogroup): while other sessions keep the cores "
                 "busy, this one gets its share whatever its process count, so parallel speed-ups (eval, data make) "
                 "shrink towards the ratio of CPU seconds (the *_cpu_s lines)")

    emit("matmul_gflops", matmul_gflops(1024, jnp.float32, 1.0 if args.quick else 2.0))
    emit("matmul_gflops_bf16", matmul_gflops(1024, jnp.bfloat16, 0.5 if args.quick else 1.5))

    data = random_data(args.data_size)
    for label, module, config in specs:
        bench_preset(label, module, config, data, args.quick)
        if args.seeds > 1 and label in seed_presets:
            bench_seeds(label, module, config, data, args.seeds, args.quick)
    del data

    if not args.no_eval:
        from vgf.envs import make_env, task_spec
        from vgf.evaluation import EnvPool, env_workers

        spec = task_spec(args.task)
        if (spec.obs_dim, spec.action_dim) != (OBS_DIM, ACTION_DIM):
            raise SystemExit(f"task {args.task} has dims ({spec.obs_dim}, {spec.action_dim}); this benchmark uses "
                             f"({OBS_DIM}, {ACTION_DIM})")
        from vgf.agents import vgf

        rows = len(BUDGETS) * episodes
        workers = env_workers(args.eval_workers, spec.max_episode_steps)
        with EnvPool(functools.partial(make_env, args.task), workers=workers) as pool:
            began = time.perf_counter()
            pool._backend(rows)  # starts the workers (if any) and builds their envs
            emit("eval_env_build_s", time.perf_counter() - began)
            eval_presets = [("cpu-small", vgf.PRESETS["cpu-small"])]
            if args.eval_paper:
                eval_presets.append(("paper", vgf.PRESETS["paper"]))
            for label, config in eval_presets:
                bench_eval(label, config, args.task, episodes, max_steps, pool)

    data_episodes = args.data_episodes if args.data_episodes is not None else (4 if args.quick else 20)
    if data_episodes:
        bench_data_make(data_episodes, args.data_steps or (100 if args.quick else 1001))

    if UPDATE_GFLOPS_BEST:
        # the roofline: this machine's best float32 matmul rate, measured at the start and again now
        emit("matmul_gflops_end", matmul_gflops(1024, jnp.float32, 1.0 if args.quick else 2.0))
        peak = max(RESULTS["matmul_gflops"], RESULTS["matmul_gflops_end"])
        for label, gflops in UPDATE_GFLOPS_BEST.items():
            emit(f"roofline_fraction/{label}", gflops / peak)
        note("roofline_fraction = update GFLOP/s of the fastest chunk / max(matmul_gflops, matmul_gflops_end)")

    emit("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    emit("peak_rss_children_mb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    total = time.perf_counter() - started
    emit("benchmark_seconds", total)
    try:
        note(f"load average at end {[round(x, 2) for x in os.getloadavg()]}")
    except OSError:
        pass

    if args.json:
        settings = {"presets": [label for label, _, _ in specs], "quick": args.quick, "eval_episodes": episodes,
                    "eval_max_steps": max_steps, "eval_workers": args.eval_workers, "task": args.task,
                    "data_size": args.data_size, "budgets": list(BUDGETS), "argv": sys.argv[1:]}
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": settings, "results": RESULTS}, f, indent=2)
        note(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
