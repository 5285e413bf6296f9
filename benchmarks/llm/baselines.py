"""TRL baselines on the testbed: KL-regularised policy gradient (RLOO) and DPO.

Both start from the same base model; RLOO optimises the same proxy reward model that VGF uses, DPO
learns from the same preference pairs the proxy was trained on. Models are trained on whatever device
accelerate finds (a GPU when there is one).
"""

from __future__ import annotations

import time

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, RLOOConfig, RLOOTrainer

from vgf.llm.reward import EmbeddingReward, PreferencePair
from vgf.llm.sampler import encode_prompts, encode_responses


def proxy_reward_function(reward: EmbeddingReward, tokenizer, max_response_tokens: int = 32):
    """The proxy reward model as a TRL reward function on text (prompts, completions) -> rewards."""

    def proxy_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
        device = reward.embedding_table.device
        with torch.no_grad():
            return reward.score_tokens_batched(encode_prompts(tokenizer, prompts, device),
                                               encode_responses(tokenizer, completions, max_response_tokens, device)).tolist()

    return proxy_reward


COMMON = dict(report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, bf16=False, fp16=False)


def train_rloo(base_path: str, tokenizer, reward: EmbeddingReward, prompts: list[str], beta: float, out_dir: str,
               steps: int, max_new_tokens: int, seed: int = 0):
    """RLOO with the sequence-level KL penalty beta * log(pi/mu) in the reward; returns (model, seconds)."""
    config = RLOOConfig(
        output_dir=out_dir, beta=beta, num_generations=4, max_completion_length=max_new_tokens, max_steps=steps,
        per_device_train_batch_size=32, learning_rate=3e-4, temperature=1.0, top_k=0, top_p=1.0, seed=seed, **COMMON,
    )
    trainer = RLOOTrainer(model=base_path, reward_funcs=proxy_reward_function(reward, tokenizer), args=config,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return trainer.model.eval(), time.perf_counter() - start


def train_dpo(base_path: str, tokenizer, pairs: list[PreferencePair], beta: float, out_dir: str, steps: int, seed: int = 0):
    """DPO on the preference pairs; returns (model, seconds)."""
    config = DPOConfig(output_dir=out_dir, beta=beta, max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-4,
                       max_length=64, seed=seed, **COMMON)
    # Completions start with a space so that prompt + completion splits into the same words.
    rows = {"prompt": [p.prompt for p in pairs], "chosen": [" " + p.chosen.strip() for p in pairs],
            "rejected": [" " + p.rejected.strip() for p in pairs]}
    trainer = DPOTrainer(model=base_path, args=config, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return trainer.model.eval(), time.perf_counter() - start
