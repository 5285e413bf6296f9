"""Supervised updates on (prompt, response) pairs, and VGF fine-tuning: sample -> transport -> project -> update.

The paper transports at inference time only; fine-tuning distils the transported samples into the model,
so the result is a new model that samples them directly. Each round's transport starts from the current
model's samples, so rounds compound: the number of rounds times the budget bounds the drift.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vgf.llm.decode import DecodeConfig, vgf_decode
from vgf.llm.reward import EmbeddingReward
from vgf.llm.sampler import TokenBatch, encode_prompts, encode_responses, response_token_log_probs


@dataclass
class SupervisedConfig:
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_response_tokens: int = 32
    seed: int = 0


def supervised_finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: TokenBatch,
    responses: TokenBatch,
    config: SupervisedConfig,
    on_step: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Minimise the mean negative log-likelihood of response tokens given prompts; returns the loss per step."""
    if prompts.ids.shape[0] != responses.ids.shape[0]:
        raise ValueError(f"{prompts.ids.shape[0]} prompts but {responses.ids.shape[0]} responses")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    rng = random.Random(config.seed)
    rows = list(range(prompts.ids.shape[0]))
    losses = []
    model.train()
    for step in range(config.steps):
        batch = torch.tensor(rng.sample(rows, min(config.batch_size, len(rows))), device=prompts.ids.device)
        batch_responses = TokenBatch(responses.ids[batch], responses.mask[batch])
        log_probs = response_token_log_probs(model, TokenBatch(prompts.ids[batch], prompts.mask[batch]), batch_responses)
        loss = -log_probs.sum() / batch_responses.mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step:
            on_step(step + 1, config.steps, losses[-1])
    model.eval()
    return losses


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_response_tokens: int, device="cpu") -> tuple[TokenBatch, TokenBatch]:
    return encode_prompts(tokenizer, prompts, device), encode_responses(tokenizer, responses, max_response_tokens, device)


@dataclass
class FinetuneConfig:
    rounds: int = 3
    prompts_per_round: int = 128
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(budget=4))
    # A few epochs over each round's samples: many more memorise them and the model collapses onto them.
    supervised: SupervisedConfig = field(default_factory=lambda: SupervisedConfig(steps=10, learning_rate=3e-4))
    seed: int = 0


def vgf_finetune(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reward: EmbeddingReward,
    prompts: list[str],
    config: FinetuneConfig,
    on_round: Callable[[dict], None] | None = None,
) -> tuple[PreTrainedModel, list[dict]]:
    """A copy of `policy` trained on its own VGF-transported samples for `config.rounds` rounds; returns it and per-round stats."""
    if config.rounds < 1 or config.prompts_per_round < 1:
        raise ValueError(f"rounds and prompts_per_round must be >= 1, got {config.rounds} and {config.prompts_per_round}")
    model = copy.deepcopy(policy)
    rng = random.Random(config.seed)
    history = []
    for round_index in range(config.rounds):
        chosen_prompts = rng.sample(prompts, min(config.prompts_per_round, len(prompts)))
        decode = DecodeConfig(**{**config.decode.__dict__, "seed": config.decode.seed + 1000 * round_index})
        decoded = vgf_decode(model, tokenizer, reward, chosen_prompts, decode)
        supervised = SupervisedConfig(**{**config.supervised.__dict__, "seed": config.seed + round_index})
        losses = supervised_finetune(model, tokenizer, decoded.prompts, decoded.responses, supervised)
        stats = {"round": round_index + 1, "selected_reward": decoded.rewards.mean().item(), "sft_loss": losses[-1]}
        history.append(stats)
        if on_round:
            on_round(stats)
    return model, history
