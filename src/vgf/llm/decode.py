"""VGF decoding: reference samples transported along the reward's embedding gradient, projected, re-scored, selected.

Budget 0 skips transport and projection, so it is Best-of-N by the reward on the very same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vgf.llm.project import project_to_reference_top_k
from vgf.llm.reward import EmbeddingReward, check_same_vocabulary
from vgf.llm.sampler import TokenBatch, decode_responses, encode_prompts, sample_continuations
from vgf.llm.transport import transport


@dataclass
class DecodeConfig:
    num_particles: int = 8  # N reference samples per prompt
    budget: int = 0  # K transport steps; 0 is Best-of-N
    step_size: float = 0.5  # Adam learning rate in units of the embedding table's standard deviation
    alpha: float = 1.0  # temperature of the Boltzmann target; smaller trusts the reward more against repulsion
    top_k: int = 10  # projection picks among the reference's k most likely tokens at each position
    sample_top_k: int = 0  # reference samples from the full distribution (0) or from its top-k
    max_new_tokens: int = 16
    prompts_per_batch: int = 32
    seed: int = 0

    def validate(self) -> None:
        for name in ("num_particles", "top_k", "max_new_tokens", "prompts_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_top_k < 0:
            raise ValueError(f"sample_top_k must be >= 0 (0: full distribution), got {self.sample_top_k}")
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        if self.step_size <= 0 or self.alpha <= 0:
            raise ValueError(f"step_size and alpha must be > 0, got {self.step_size} and {self.alpha}")


@dataclass
class Decoded:
    """One selected response per prompt, plus every candidate's reward."""

    prompts: TokenBatch  # [P, Lp]
    responses: TokenBatch  # [P, T]
    texts: list[str]
    rewards: torch.Tensor  # [P] reward of the selected response
    candidate_rewards: torch.Tensor  # [P, N]


def movable_positions(responses: TokenBatch, eos_token_id: int) -> torch.Tensor:
    """1 on response tokens that transport may change: real tokens other than EOS."""
    return responses.mask * (responses.ids != eos_token_id).long()


def transport_responses(
    reward: EmbeddingReward, prompts: TokenBatch, responses: TokenBatch, movable: torch.Tensor,
    num_particles: int, budget: int, learning_rate: float, alpha: float,
) -> torch.Tensor:
    """SVGD in embedding space, one particle set per prompt: response embeddings [P*N, T, D] after `budget` steps."""
    start = reward.embed(responses.ids).detach()
    rows, length, dim = start.shape
    keep = movable[..., None].to(start.dtype)

    def score(particles: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            embeds = particles.reshape(rows, length, dim).requires_grad_(True)
            mixed = keep * embeds + (1 - keep) * start  # only movable positions see the particle
            total = reward.score_embedded(prompts, mixed, responses.mask).sum()
            (gradient,) = torch.autograd.grad(total, embeds)
        return (gradient * keep).reshape(particles.shape)

    particles = start.reshape(rows // num_particles, num_particles, length * dim)
    moved = transport(score, particles, budget, learning_rate, alpha)
    # Frozen positions have zero score but the kernel repulsion would still push them.
    return keep * moved.reshape(rows, length, dim) + (1 - keep) * start


def vgf_decode(
    policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, reward: EmbeddingReward, prompts: list[str], config: DecodeConfig,
) -> Decoded:
    """For each prompt: N samples of `policy`, K transport steps, projection to its top-k, the best by `reward`."""
    config.validate()
    check_same_vocabulary(reward, policy)
    device = reward.embedding_table.device
    learning_rate = config.step_size * reward.embedding_table.detach().float().std().item()
    excluded = sorted({tokenizer.eos_token_id, tokenizer.pad_token_id})
    parts = []
    for batch_index, start in enumerate(range(0, len(prompts), config.prompts_per_batch)):
        batch_prompts = encode_prompts(tokenizer, prompts[start : start + config.prompts_per_batch], device)
        repeated = batch_prompts.repeat_each(config.num_particles)
        samples = sample_continuations(policy, tokenizer, batch_prompts, config.num_particles, config.max_new_tokens, config.seed + batch_index,
                                       top_k=config.sample_top_k)
        if config.budget > 0:
            movable = movable_positions(samples, tokenizer.eos_token_id)
            moved = transport_responses(reward, repeated, samples, movable, config.num_particles, config.budget, learning_rate, config.alpha)
            samples = project_to_reference_top_k(policy, repeated, samples, movable, moved, reward.embedding_table, config.top_k, excluded)
        scores = reward.score_tokens_batched(repeated, samples).reshape(-1, config.num_particles)
        parts.append((batch_prompts, samples, scores))
    return select_best(tokenizer, parts, config.num_particles)


def select_best(tokenizer, parts: list[tuple[TokenBatch, TokenBatch, torch.Tensor]], num_particles: int) -> Decoded:
    """Per prompt, the candidate with the highest reward (first one on ties)."""
    prompt_rows, response_rows, best_rewards, all_rewards = [], [], [], []
    for prompts, samples, scores in parts:
        best = scores.argmax(1)
        rows = torch.arange(scores.shape[0], device=scores.device) * num_particles + best
        prompt_rows.append(prompts)
        response_rows.append(TokenBatch(samples.ids[rows], samples.mask[rows]))
        best_rewards.append(scores.max(1).values)
        all_rewards.append(scores)
    prompts = concat_padded(prompt_rows, tokenizer.pad_token_id, left=True)
    responses = concat_padded(response_rows, tokenizer.pad_token_id, left=False)
    return Decoded(prompts, responses, decode_responses(tokenizer, responses), torch.cat(best_rewards), torch.cat(all_rewards))


def concat_padded(batches: list[TokenBatch], pad_id: int, left: bool) -> TokenBatch:
    """Stack batches of different widths, padding on the given side."""
    width = max(batch.ids.shape[1] for batch in batches)
    ids, masks = [], []
    for batch in batches:
        extra = width - batch.ids.shape[1]
        pad = (extra, 0) if left else (0, extra)
        ids.append(torch.nn.functional.pad(batch.ids, pad, value=pad_id))
        masks.append(torch.nn.functional.pad(batch.mask, pad, value=0))
    return TokenBatch(torch.cat(ids), torch.cat(masks))


def best_of_n(policy, tokenizer, reward, prompts: list[str], config: DecodeConfig) -> Decoded:
    """Best-of-N by the reward: VGF decoding with budget 0."""
    return vgf_decode(policy, tokenizer, reward, prompts, DecodeConfig(**{**config.__dict__, "budget": 0}))
