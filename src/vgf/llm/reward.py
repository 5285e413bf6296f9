"""Rewards that are differentiable in input-embedding space, and Bradley-Terry training from preference pairs.

VGF moves a response's embedding sequence along the reward's gradient, so a reward here is anything that
scores a left-padded embedding sequence: an `AutoModelForSequenceClassification` (whose pooled logit is
read at the last position, which left padding makes the last real token) or any callable. Its embedding
table defines the particle space and the tokens that projection can return, so it must share the
policy's vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from vgf.llm.sampler import TokenBatch, encode_prompts, encode_responses, position_ids_from_mask


class EmbeddingReward:
    """reward(inputs_embeds [R, L, D], attention_mask [R, L]) -> [R], inputs left-padded, plus the table [V, D]."""

    def __init__(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], embedding_table: torch.Tensor):
        if embedding_table.ndim != 2:
            raise ValueError(f"embedding_table must be [vocab, dim], got shape {tuple(embedding_table.shape)}")
        self.score = score
        self.embedding_table = embedding_table

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_table)

    def score_embedded(self, prompts: TokenBatch, response_embeds: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Reward of each (prompt, response) row with the response given as embeddings [R, T, D]: [R]."""
        if response_embeds.shape[:2] != response_mask.shape or response_embeds.shape[0] != prompts.ids.shape[0]:
            raise ValueError(
                f"response embeddings {tuple(response_embeds.shape)}, mask {tuple(response_mask.shape)} and "
                f"prompts {tuple(prompts.ids.shape)} disagree on rows or length"
            )
        embeds, mask = join_left_padded(self.embed(prompts.ids), prompts.mask, response_embeds, response_mask)
        return self.score(embeds, mask)

    def score_tokens(self, prompts: TokenBatch, responses: TokenBatch) -> torch.Tensor:
        return self.score_embedded(prompts, self.embed(responses.ids), responses.mask)

    @torch.no_grad()
    def score_tokens_batched(self, prompts: TokenBatch, responses: TokenBatch, batch_size: int = 256) -> torch.Tensor:
        rows = prompts.ids.shape[0]
        return torch.cat([
            self.score_tokens(TokenBatch(prompts.ids[i : i + batch_size], prompts.mask[i : i + batch_size]),
                              TokenBatch(responses.ids[i : i + batch_size], responses.mask[i : i + batch_size]))
            for i in range(0, rows, batch_size)
        ])


def join_left_padded(prompt_embeds, prompt_mask, response_embeds, response_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate prompt and response and move every padding position to the front (differentiably).

    Left padding makes the last position the last real token for every row, which is where sequence
    classifiers pool when they cannot see token ids.
    """
    embeds = torch.cat([prompt_embeds, response_embeds], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    order = torch.argsort(mask, dim=1, stable=True)  # pads (0) first, real tokens keep their order
    return embeds.gather(1, order[..., None].expand_as(embeds)), mask.gather(1, order)


def sequence_classifier_score(model: PreTrainedModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if model.config.num_labels != 1:
        raise ValueError(f"a reward model needs num_labels=1, this one has {model.config.num_labels}")

    def score(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)).logits
        return logits[:, 0].float()

    return score


def reward_from_model(model: PreTrainedModel) -> EmbeddingReward:
    return EmbeddingReward(sequence_classifier_score(model), model.get_input_embeddings().weight)


def load_reward_model(path_or_id: str, device="cpu") -> tuple[EmbeddingReward, PreTrainedModel]:
    model = AutoModelForSequenceClassification.from_pretrained(path_or_id).to(device).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id  # batches are left-padded; the id only silences the check
    return reward_from_model(model), model


def check_same_vocabulary(reward: EmbeddingReward, policy: PreTrainedModel) -> None:
    policy_vocab = policy.get_input_embeddings().weight.shape[0]
    if reward.embedding_table.shape[0] != policy_vocab:
        raise ValueError(
            f"reward embedding table has {reward.embedding_table.shape[0]} tokens but the policy has {policy_vocab}: "
            "VGF needs a reward model on the policy's tokenizer (for example one initialised from the policy)"
        )


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class BradleyTerryConfig:
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 3e-4
    max_response_tokens: int = 32
    freeze_embeddings: bool = True  # keeps the particle space the policy's own embedding space
    seed: int = 0


def train_bradley_terry(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferencePair],
    config: BradleyTerryConfig,
    on_step: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Fit r so that P(chosen > rejected) = sigmoid(r(chosen) - r(rejected)); returns the loss per step."""
    if not pairs:
        raise ValueError("no preference pairs to train on")
    device = next(model.parameters()).device
    model.get_input_embeddings().weight.requires_grad_(not config.freeze_embeddings)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    reward = reward_from_model(model)
    order = list(range(len(pairs)))
    rng = random.Random(config.seed)
    steps_per_epoch = (len(pairs) + config.batch_size - 1) // config.batch_size
    losses = []
    model.train()
    for _ in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = [pairs[i] for i in order[start : start + config.batch_size]]
            prompts = encode_prompts(tokenizer, [p.prompt for p in batch] * 2, device)
            responses = encode_responses(tokenizer, [p.chosen for p in batch] + [p.rejected for p in batch], config.max_response_tokens, device)
            rewards = reward.score_tokens(prompts, responses)
            chosen, rejected = rewards[: len(batch)], rewards[len(batch) :]
            loss = -F.logsigmoid(chosen - rejected).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_step:
                on_step(len(losses), config.epochs * steps_per_epoch, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def preference_accuracy(reward: EmbeddingReward, tokenizer, pairs: list[PreferencePair], max_response_tokens: int = 32) -> float:
    """Fraction of pairs where the reward ranks chosen above rejected."""
    device = reward.embedding_table.device
    prompts = encode_prompts(tokenizer, [p.prompt for p in pairs], device)
    chosen = reward.score_tokens_batched(prompts, encode_responses(tokenizer, [p.chosen for p in pairs], max_response_tokens, device))
    rejected = reward.score_tokens_batched(prompts, encode_responses(tokenizer, [p.rejected for p in pairs], max_response_tokens, device))
    return (chosen > rejected).float().mean().item()
