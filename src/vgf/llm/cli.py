"""`vgf llm ...`: build the testbed, train a reward model, decode with VGF, fine-tune, evaluate.

Imported lazily by `vgf.cli`, so the core command works without the `[llm]` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path


def add_llm_commands(subparsers) -> None:
    """Register `llm` and its sub-commands on the `vgf` command's sub-parsers."""
    llm = subparsers.add_parser("llm", help="VGF for language models (needs the [llm] extra)")
    commands = llm.add_subparsers(dest="llm_command", required=True)

    testbed = commands.add_parser("testbed", help="build the local testbed: corpus, gold reward, base GPT-2, proxy reward model")
    testbed.add_argument("--out", default="runs/llm-testbed")
    testbed.add_argument("--preset", default="small", help="small (minutes) or tiny (seconds)")
    testbed.add_argument("--seed", type=int, default=0)

    reward = commands.add_parser("train-reward", help="train a Bradley-Terry reward model from preference pairs")
    reward.add_argument("--model", required=True, help="path or cached hub id of the base model to start from")
    reward.add_argument("--pairs", required=True, help="JSONL/Parquet preference pairs (prompt/chosen/rejected, HH or TL;DR layout)")
    reward.add_argument("--out", required=True)
    reward.add_argument("--epochs", type=int, default=2)
    reward.add_argument("--batch-size", type=int, default=32)
    reward.add_argument("--learning-rate", type=float, default=3e-4)
    reward.add_argument("--max-response-tokens", type=int, default=64)
    reward.add_argument("--train-embeddings", action="store_true", help="also train the token embeddings (then the particle space is the reward's own)")

    generate = commands.add_parser("generate", help="decode with VGF at a transport budget (budget 0 = Best-of-N)")
    add_decode_arguments(generate)
    generate.add_argument("--out", required=True, help="JSONL file of prompt/response/reward rows")

    finetune = commands.add_parser("finetune", help="fine-tune the model on its own VGF-transported samples")
    add_decode_arguments(finetune)
    finetune.add_argument("--out", required=True, help="directory for the fine-tuned model")
    finetune.add_argument("--rounds", type=int, default=3)
    finetune.add_argument("--prompts-per-round", type=int, default=128)
    finetune.add_argument("--sft-steps", type=int, default=10, help="supervised steps of 32 samples per round")
    finetune.add_argument("--sft-learning-rate", type=float, default=3e-4)

    evaluate = commands.add_parser("eval", help="win rates against the reference model's samples and the dataset's chosen responses")
    add_decode_arguments(evaluate, prompts_required=False)
    evaluate.add_argument("--pairs", required=True, help="held-out preference pairs: their prompts are evaluated, their chosen responses compared")
    evaluate.add_argument("--reference", help="base model for the reference samples and KL (default: --model)")
    evaluate.add_argument("--judge", default="gold", help="'gold' (the testbed's program) or the path of a judge reward model")
    evaluate.add_argument("--sample", action="store_true", help="evaluate plain samples of --model (a fine-tuned policy) instead of decoding")
    evaluate.add_argument("--kl-samples", type=int, default=16, help="base samples per prompt for the KL bound of decoding")
    evaluate.add_argument("--out", help="also write the result as JSON here")


def add_decode_arguments(parser, prompts_required: bool = True) -> None:
    parser.add_argument("--model", required=True, help="causal LM: local path or cached hub id")
    parser.add_argument("--reward", required=True, help="reward model (AutoModelForSequenceClassification) path")
    if prompts_required:
        parser.add_argument("--prompts", required=True, help="JSONL/Parquet prompts (prompt, TL;DR post or HH dialogues)")
    parser.add_argument("--budget", type=int, default=4, help="transport steps K; 0 is Best-of-N")
    parser.add_argument("--particles", type=int, default=8, help="samples N per prompt")
    parser.add_argument("--step-size", type=float, default=0.5, help="Adam step in units of the embedding table's standard deviation")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=10, help="projection stays among the reference's top-k tokens")
    parser.add_argument("--sample-top-k", type=int, default=0, help="sample the reference from its top-k tokens (0: full distribution)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def decode_config(args):
    from vgf.llm.decode import DecodeConfig

    config = DecodeConfig(num_particles=args.particles, budget=args.budget, step_size=args.step_size, alpha=args.alpha,
                          top_k=args.top_k, sample_top_k=args.sample_top_k, max_new_tokens=args.max_new_tokens, seed=args.seed)
    config.validate()
    return config


def load_policy_and_reward(args):
    from vgf.llm.reward import load_reward_model
    from vgf.llm.sampler import default_device, load_causal_lm

    device = args.device or default_device()
    policy, tokenizer = load_causal_lm(args.model, device)
    reward, _ = load_reward_model(args.reward, device)
    return policy, tokenizer, reward, device


def cmd_testbed(args) -> int:
    from vgf.llm.testbed import PRESETS, build_testbed

    if args.preset not in PRESETS:
        raise ValueError(f"unknown testbed preset {args.preset!r}; expected one of {sorted(PRESETS)}")
    config = PRESETS[args.preset]
    config.seed = args.seed
    build_testbed(args.out, config)
    return 0


def cmd_train_reward(args) -> int:
    from transformers import AutoModelForSequenceClassification

    from vgf.llm.data import load_preference_pairs
    from vgf.llm.reward import BradleyTerryConfig, train_bradley_terry
    from vgf.llm.sampler import load_tokenizer

    pairs = load_preference_pairs(args.pairs)
    tokenizer = load_tokenizer(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    config = BradleyTerryConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                max_response_tokens=args.max_response_tokens, freeze_embeddings=not args.train_embeddings)
    report_every = max(1, len(pairs) // config.batch_size // 10)
    losses = train_bradley_terry(model, tokenizer, pairs, config,
                                 on_step=lambda step, total, loss: step % report_every == 0 and print(f"step {step}/{total} loss {loss:.4f}"))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"reward model written to {args.out} (final loss {losses[-1]:.4f})")
    return 0


def cmd_generate(args) -> int:
    from vgf.llm.data import load_prompts, write_jsonl
    from vgf.llm.decode import vgf_decode

    policy, tokenizer, reward, _ = load_policy_and_reward(args)
    prompts = load_prompts(args.prompts)
    start = time.perf_counter()
    decoded = vgf_decode(policy, tokenizer, reward, prompts, decode_config(args))
    seconds = time.perf_counter() - start
    write_jsonl(args.out, [{"prompt": p, "response": r, "reward": s} for p, r, s in zip(prompts, decoded.texts, decoded.rewards.tolist())])
    print(f"{len(prompts)} responses at budget {args.budget} written to {args.out}: mean reward {decoded.rewards.mean():.4f}, "
          f"{seconds / len(prompts):.3f} s per prompt")
    return 0


def cmd_finetune(args) -> int:
    from vgf.llm.data import load_prompts
    from vgf.llm.finetune import FinetuneConfig, SupervisedConfig, vgf_finetune

    policy, tokenizer, reward, _ = load_policy_and_reward(args)
    config = FinetuneConfig(rounds=args.rounds, prompts_per_round=args.prompts_per_round, decode=decode_config(args),
                            supervised=SupervisedConfig(steps=args.sft_steps, learning_rate=args.sft_learning_rate, seed=args.seed), seed=args.seed)
    model, history = vgf_finetune(policy, tokenizer, reward, load_prompts(args.prompts), config, on_round=lambda stats: print(json.dumps(stats)))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"fine-tuned model written to {args.out}")
    return 0


def cmd_eval(args) -> int:
    import torch

    from vgf.llm.data import load_preference_pairs
    from vgf.llm.decode import vgf_decode
    from vgf.llm.evaluate import gold_judge, judge_outputs, reward_model_judge
    from vgf.llm.evaluate import witness_kl
    from vgf.llm.metrics import monte_carlo_kl
    from vgf.llm.reward import load_reward_model
    from vgf.llm.sampler import decode_responses, encode_prompts, encode_responses, load_causal_lm, sample_continuations

    policy, tokenizer, reward, device = load_policy_and_reward(args)
    base, _ = load_causal_lm(args.reference or args.model, device)
    pairs = load_preference_pairs(args.pairs)
    prompts = [pair.prompt for pair in pairs]
    prompt_batch = encode_prompts(tokenizer, prompts, device)
    reference = sample_continuations(base, tokenizer, prompt_batch, 1, args.max_new_tokens, seed=args.seed + 10_000)
    start = time.perf_counter()
    if args.sample:
        responses = sample_continuations(policy, tokenizer, prompt_batch, 1, args.max_new_tokens, seed=args.seed)
        texts = decode_responses(tokenizer, responses)
        kl, kl_estimator = monte_carlo_kl(policy, base, prompt_batch, responses), "monte-carlo"
    else:
        decoded = vgf_decode(policy, tokenizer, reward, prompts, decode_config(args))
        responses, texts = decoded.responses, decoded.texts
        base_samples = sample_continuations(base, tokenizer, decoded.prompts, args.kl_samples, args.max_new_tokens, seed=args.seed + 20_000)
        base_texts = decode_responses(tokenizer, base_samples)
        per_prompt = [base_texts[i : i + args.kl_samples] for i in range(0, len(base_texts), args.kl_samples)]
        kl, kl_estimator = witness_kl([reward_model_judge(reward, tokenizer)], prompts, texts, per_prompt), "donsker-varadhan (reward witness)"
    seconds_per_prompt = (time.perf_counter() - start) / len(prompts)
    if args.judge == "gold":
        judge = gold_judge()
    else:
        judge_reward, _ = load_reward_model(args.judge, device)
        judge = reward_model_judge(judge_reward, tokenizer)
    judged = judge_outputs(judge, prompts, texts, decode_responses(tokenizer, reference), [pair.chosen.strip() for pair in pairs])
    with torch.no_grad():
        proxy = reward.score_tokens_batched(encode_prompts(tokenizer, prompts, device), encode_responses(tokenizer, texts, args.max_new_tokens + 1, device))
    result = {"judge_mean": judged.judge_mean, "reward_mean": proxy.mean().item(), "win_vs_reference": judged.win_vs_reference, "win_vs_chosen": judged.win_vs_chosen,
              "kl": kl, "kl_estimator": kl_estimator, "seconds_per_prompt": seconds_per_prompt, "prompts": len(prompts)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


HANDLERS = {"testbed": cmd_testbed, "train-reward": cmd_train_reward, "generate": cmd_generate, "finetune": cmd_finetune, "eval": cmd_eval}


def cmd_llm(args) -> int:
    """Run the `vgf llm` sub-command in `args.llm_command`; exit code 2 when the [llm] extra is missing."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"vgf llm needs {' and '.join(missing)}: pip install torch==2.13.0 && pip install -e '.[llm]'", file=sys.stderr)
        return 2
    return HANDLERS[args.llm_command](args)


def main(argv: list[str] | None = None) -> int:
    """`python -m vgf.llm.cli ...`: the same commands without the `vgf llm` prefix."""
    parser = argparse.ArgumentParser(prog="vgf")
    add_llm_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["llm", *(argv if argv is not None else sys.argv[1:])])
    return cmd_llm(args)


if __name__ == "__main__":
    raise SystemExit(main())
