"""Train one d3rlpy agent on a D4RL-layout HDF5 file; run by `run_d3rlpy.py` with the peer environment's Python.

Settings are those of d3rlpy 2.8.1's own D4RL reproduction scripts (reproductions/offline/iql.py, td3_plus_bc.py);
only the number of updates is ours. After every `--eval-every` updates the policy is saved as TorchScript
(`policy_<step>.pt`, observation scaling included) for `run_d3rlpy.py` to evaluate in vgf's env, and a line with
d3rlpy's losses goes to `metrics.jsonl`. Nothing of vgf is imported here: this runs beside d3rlpy's pinned versions.
"""

import argparse
import json
import os
from pathlib import Path

import d3rlpy
import h5py
import numpy as np


def load(path):
    with h5py.File(path, "r") as handle:
        arrays = {key: handle[key][()] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    terminals = arrays["terminals"].astype(np.float32)
    timeouts = arrays["timeouts"].astype(bool) & ~arrays["terminals"].astype(bool)  # d3rlpy: never both on one step
    return d3rlpy.dataset.MDPDataset(arrays["observations"], arrays["actions"], arrays["rewards"], terminals,
                                     timeouts.astype(np.float32))


def make_algo(name, steps):
    if name == "iql":  # reproductions/offline/iql.py
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)),
            batch_size=256, weight_temp=3.0, max_weight=100.0, expectile=0.7,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        ).create(device="cpu:0")
    if name == "td3+bc":  # reproductions/offline/td3_plus_bc.py
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        ).create(device="cpu:0")
    raise SystemExit(f"unknown algorithm {name!r}: iql or td3+bc")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--eval-every", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d3rlpy.seed(args.seed)
    algo = make_algo(args.algo, args.steps)
    fitter = algo.fitter(load(args.dataset), n_steps=args.steps, n_steps_per_epoch=args.eval_every,
                         experiment_name=f"{args.algo}-s{args.seed}", with_timestamp=False, show_progress=False,
                         logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9)
    with open(out / "metrics.jsonl", "w") as log:
        for epoch, metrics in fitter:
            step = epoch * args.eval_every
            tmp = out / f".policy_{step}.pt"
            algo.save_policy(str(tmp))
            os.replace(tmp, out / f"policy_{step}.pt")
            log.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            log.flush()
    (out / "versions.json").write_text(json.dumps({"d3rlpy": d3rlpy.__version__, "torch": __import__("torch").__version__}))


if __name__ == "__main__":
    main()
