"""VGF for language models on the local testbed, against Best-of-N, RLOO (TRL) and DPO (TRL).

    nice .venv/bin/python benchmarks/llm/run.py

Writes benchmarks/llm/results/{results.md, results.csv, gold_vs_kl.png}. The testbed (corpus, gold reward,
base GPT-2, proxy reward model) is built under --work, or reused when one with the same config is there.
Every method is judged by the gold reward on the held-out prompts' preference pairs (each pair's prompt,
with its chosen response for the second win rate).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import proxy_reward_function, train_dpo, train_rloo  # noqa: E402

from vgf.llm.data import load_preference_pairs, load_prompts  # noqa: E402
from vgf.llm.decode import DecodeConfig, vgf_decode  # noqa: E402
from vgf.llm.evaluate import gold_judge, judge_outputs, witness_kl  # noqa: E402
from vgf.llm.finetune import FinetuneConfig, SupervisedConfig, vgf_finetune  # noqa: E402
from vgf.llm.metrics import best_of_n_kl, monte_carlo_kl  # noqa: E402
from vgf.llm.reward import load_reward_model  # noqa: E402
from vgf.llm.sampler import TokenBatch, decode_responses, default_device, encode_prompts, load_causal_lm, sample_continuations  # noqa: E402
from vgf.llm.testbed import PRESETS, TestbedPaths, build_testbed  # noqa: E402


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/llm/results")
    parser.add_argument("--work", default="runs/llm-bench", help="testbed and scratch directory")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--budgets", type=int_list, default=[0, 1, 2, 4, 8])
    parser.add_argument("--best-of", type=int_list, default=[1, 2, 4, 8, 16])
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--step-size", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--finetune-rounds", type=int, default=3)
    parser.add_argument("--finetune-prompts", type=int, default=128, help="training prompts per fine-tuning round")
    parser.add_argument("--finetune-sft-steps", type=int, default=10, help="supervised steps (batch 32) per round: about 2.5 epochs")
    parser.add_argument("--rloo-betas", type=float_list, default=[0.01, 0.05, 0.2])
    parser.add_argument("--rloo-steps", type=int, default=300)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--dpo-steps", type=int, default=150)
    parser.add_argument("--kl-samples", type=int, default=16, help="base samples per prompt for the KL bound")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small models on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@dataclass
class Row:
    method: str
    setting: str
    gold: float
    proxy: float
    win_vs_reference: float
    win_vs_chosen: float
    kl: float  # the best value available: analytic (Best-of-N), Monte Carlo (trained policies), else the bound
    kl_source: str
    kl_bound: float  # Donsker-Varadhan lower bound with the proxy and gold rewards as witnesses
    train_seconds: float
    seconds_per_prompt: float


def testbed_for(args) -> TestbedPaths:
    config = PRESETS[args.preset]
    config.seed = args.seed
    paths = TestbedPaths(Path(args.work) / f"testbed-{args.preset}")
    if paths.info.exists() and json.loads(paths.info.read_text())["config"] == asdict(config):
        print(f"reusing the testbed in {paths.root}")
        return paths
    return build_testbed(paths.root, config)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = default_device()
    paths = testbed_for(args)
    (Path(args.work) / "outputs.jsonl").unlink(missing_ok=True)
    base, tokenizer = load_causal_lm(str(paths.base), device)
    proxy, _ = load_reward_model(str(paths.proxy_reward), device)
    pairs = load_preference_pairs(paths.eval_preferences)
    prompts = [pair.prompt for pair in pairs]
    chosen = [pair.chosen for pair in pairs]
    prompt_batch = encode_prompts(tokenizer, prompts, device)
    judge = gold_judge()
    reference_texts = decode_responses(tokenizer, sample_continuations(base, tokenizer, prompt_batch, 1, args.max_new_tokens, seed=10_001))
    base_texts = decode_responses(tokenizer, sample_continuations(base, tokenizer, prompt_batch, args.kl_samples, args.max_new_tokens, seed=10_002))
    base_per_prompt = [base_texts[i : i + args.kl_samples] for i in range(0, len(base_texts), args.kl_samples)]
    proxy_on_text = proxy_reward_function(proxy, tokenizer)
    rows: list[Row] = []

    def record(method, setting, texts, responses: TokenBatch, kl, kl_source, train_seconds, seconds_per_prompt):
        judged = judge_outputs(judge, prompts, texts, reference_texts, chosen)
        estimated = witness_kl([proxy_on_text, judge], prompts, texts, base_per_prompt)
        row = Row(method, setting, judged.judge_mean, sum(proxy_on_text(prompts, texts)) / len(texts), judged.win_vs_reference,
                  judged.win_vs_chosen, estimated if kl is None else kl, kl_source, estimated, train_seconds, seconds_per_prompt)
        rows.append(row)
        with (Path(args.work) / "outputs.jsonl").open("a") as handle:  # every response, to re-judge without re-running
            handle.write(json.dumps({"method": method, "setting": setting, "responses": texts}) + "\n")
        print(f"{method:22s} {setting:16s} gold {row.gold:6.3f} proxy {row.proxy:6.3f} win/ref {row.win_vs_reference:.3f} "
              f"win/chosen {row.win_vs_chosen:.3f} KL {row.kl:6.3f} ({kl_source}; bound {estimated:6.3f}) "
              f"train {train_seconds:6.1f}s  {seconds_per_prompt * 1000:7.1f} ms/prompt", flush=True)

    def decode(policy, budget, particles, sample_top_k=0):
        config = DecodeConfig(num_particles=particles, budget=budget, step_size=args.step_size, alpha=args.alpha, top_k=args.top_k,
                              sample_top_k=sample_top_k, max_new_tokens=args.max_new_tokens, prompts_per_batch=64, seed=args.seed)
        start = time.perf_counter()
        decoded = vgf_decode(policy, tokenizer, proxy, prompts, config)
        return decoded, (time.perf_counter() - start) / len(prompts)

    def sample_policy(policy):
        start = time.perf_counter()
        responses = sample_continuations(policy, tokenizer, prompt_batch, 1, args.max_new_tokens, seed=args.seed + 20_000)
        seconds = (time.perf_counter() - start) / len(prompts)
        return decode_responses(tokenizer, responses), responses, monte_carlo_kl(policy, base, prompt_batch, responses), seconds

    # Two reference distributions: the full one (Best-of-N as usually defined) and top-k sampling with the
    # projection's k, where budget 0 is also the projection's fixed point, so the difference is transport alone.
    for family, sample_top_k in (("", 0), (" top-k", args.top_k)):
        for n in args.best_of:
            decoded, seconds = decode(base, 0, n, sample_top_k)
            exact = best_of_n_kl(n) if sample_top_k == 0 else None
            record(f"Best-of-N{family}", f"N={n}", decoded.texts, decoded.responses, exact, "analytic" if exact is not None else "DV bound", 0.0, seconds)
        for budget in args.budgets:
            decoded, seconds = decode(base, budget, args.particles, sample_top_k)
            exact = best_of_n_kl(args.particles) if budget == 0 and sample_top_k == 0 else None
            record(f"VGF decoding{family}", f"K={budget},N={args.particles}", decoded.texts, decoded.responses, exact,
                   "analytic" if exact is not None else "DV bound", 0.0, seconds)

    train_prompts = load_prompts(paths.train_prompts)
    for budget in args.budgets:
        config = FinetuneConfig(
            rounds=args.finetune_rounds, prompts_per_round=args.finetune_prompts, seed=args.seed,
            decode=DecodeConfig(num_particles=args.particles, budget=budget, step_size=args.step_size, alpha=args.alpha, top_k=args.top_k,
                                max_new_tokens=args.max_new_tokens, prompts_per_batch=64, seed=args.seed),
            supervised=SupervisedConfig(steps=args.finetune_sft_steps, learning_rate=3e-4, seed=args.seed),
        )
        start = time.perf_counter()
        tuned, _ = vgf_finetune(base, tokenizer, proxy, train_prompts, config)
        train_seconds = time.perf_counter() - start
        texts, responses, kl, seconds = sample_policy(tuned)
        record("VGF fine-tuned", f"K={budget},{args.finetune_rounds} rounds", texts, responses, kl, "monte-carlo", train_seconds, seconds)

    scratch = Path(args.work) / "trl"
    for beta in args.rloo_betas:
        policy, train_seconds = train_rloo(str(paths.base), tokenizer, proxy, train_prompts, beta, str(scratch / f"rloo-{beta}"),
                                           args.rloo_steps, args.max_new_tokens, args.seed)
        texts, responses, kl, seconds = sample_policy(policy.to(device))
        record("RLOO (TRL)", f"beta={beta}", texts, responses, kl, "monte-carlo", train_seconds, seconds)
    policy, train_seconds = train_dpo(str(paths.base), tokenizer, load_preference_pairs(paths.train_preferences), args.dpo_beta,
                                      str(scratch / "dpo"), args.dpo_steps, args.seed)
    texts, responses, kl, seconds = sample_policy(policy.to(device))
    record("DPO (TRL)", f"beta={args.dpo_beta}", texts, responses, kl, "monte-carlo", train_seconds, seconds)

    write_results(Path(args.out), rows, args, paths, time.perf_counter() - started, device)
    return 0


def write_results(out: Path, rows: list[Row], args, paths: TestbedPaths, total_seconds: float, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)

    info = json.loads(paths.info.read_text())
    command = "nice .venv/bin/python benchmarks/llm/run.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`",
        "",
        f"Testbed `{args.preset}` (seed {args.seed}): {info['train_prompts']} training / {info['eval_prompts']} held-out prompts; "
        f"proxy reward accuracy on held-out pairs {info['proxy_accuracy_on_eval_pairs']:.3f} (the gold reward itself: "
        f"{info['gold_accuracy_on_eval_pairs']:.3f}; labels carry Bradley-Terry noise). Judged rows: every held-out pair "
        f"({len(load_preference_pairs(paths.eval_preferences))}). Device: {device}, {args.threads} thread(s); total {total_seconds / 60:.1f} min.",
        "",
        f"VGF: N={args.particles} particles, step size {args.step_size} x embedding std, alpha {args.alpha}, projection top-k {args.top_k}, "
        f"{args.max_new_tokens} new tokens at most. Fine-tuned: {args.finetune_rounds} rounds of {args.finetune_prompts} training prompts, "
        f"{args.finetune_sft_steps} SFT steps of 32 each. "
        f"RLOO: {args.rloo_steps} steps, 4 generations per prompt. DPO: {args.dpo_steps} steps on the training pairs. "
        f"Rows marked top-k sample the reference from its top-{args.top_k} tokens (the projection's support), so that budget 0 "
        "is also a fixed point of the projection and the gap to Best-of-N top-k is the transport's alone.",
        "",
        "KL from the base model: `analytic` = log N - (N-1)/N (Best-of-N), `monte-carlo` = mean log pi/mu on the policy's own samples, "
        f"`DV bound` = Donsker-Varadhan lower bound max_l E_pi[l.w] - log E_mu[exp(l.w)] per prompt, with the proxy and gold rewards as "
        f"the witness w and {args.kl_samples} base samples per prompt: the only value for VGF decoding and top-k sampling; the column "
        "`KL bound` gives it for every method, to compare with the exact values where they exist. Seconds are wall-clock on this device; `train s` is the whole "
        "training run, `ms/prompt` the inference cost per prompt.",
        "",
        "| method | setting | gold | proxy | win vs reference | win vs chosen | KL | KL source | KL bound | train s | ms/prompt |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r.method} | {r.setting} | {r.gold:.3f} | {r.proxy:.3f} | {r.win_vs_reference:.3f} | {r.win_vs_chosen:.3f} | "
                     f"{r.kl:.3f} | {r.kl_source} | {r.kl_bound:.3f} | {r.train_seconds:.0f} | {1000 * r.seconds_per_prompt:.1f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")

    figure, axis = plt.subplots(figsize=(8, 5.5))
    styles = {"Best-of-N": "o-", "VGF decoding": "s-", "Best-of-N top-k": "o--", "VGF decoding top-k": "s--",
              "VGF fine-tuned": "D-", "RLOO (TRL)": "^-", "DPO (TRL)": "v"}
    for method, style in styles.items():
        points = [r for r in rows if r.method == method]
        if not points:
            continue
        axis.plot([r.kl for r in points], [r.gold for r in points], style, label=method)
        for r in points:
            axis.annotate(f"{r.setting.split(',')[0]} {1000 * r.seconds_per_prompt:.0f}ms", (r.kl, r.gold), fontsize=6,
                          xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("KL from the base model (nats): exact where known, else a lower bound (KL source in results.md)")
    axis.set_ylabel("gold reward (held-out prompts)")
    axis.set_title("Gold reward against KL; labels: setting and inference ms/prompt")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "gold_vs_kl.png", dpi=130)
    print(f"results written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
