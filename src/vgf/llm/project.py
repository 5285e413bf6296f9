"""Projection of transported embedding sequences back to tokens inside the reference model's support.

Position by position, the reference model proposes its top-k next tokens given the prompt and the tokens
already chosen, and the token whose embedding is nearest to the particle at that position is taken. So
every returned token is one the reference would rank among its k most likely there, however far the
particle moved. End-of-sequence and padding are never proposed and positions that were EOS or padding
stay as they were, so each response keeps its length.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from vgf.llm.sampler import TokenBatch, position_ids_from_mask


@torch.no_grad()
def project_to_reference_top_k(
    reference: PreTrainedModel,
    prompts: TokenBatch,
    responses: TokenBatch,
    movable: torch.Tensor,
    particles: torch.Tensor,
    embedding_table: torch.Tensor,
    top_k: int,
    excluded_token_ids: list[int],
) -> TokenBatch:
    """Tokens [R, T] for particles [R, T, D]; positions where `movable` is 0 keep `responses.ids`."""
    rows, length = responses.ids.shape
    if particles.shape[:2] != (rows, length) or particles.shape[2] != embedding_table.shape[1]:
        raise ValueError(f"particles have shape {tuple(particles.shape)}, expected ({rows}, {length}, {embedding_table.shape[1]})")
    proposable = embedding_table.shape[0] - len(set(excluded_token_ids))
    if not 1 <= top_k <= proposable:
        raise ValueError(f"top_k must be in [1, {proposable}] (vocabulary less EOS and padding), got {top_k}")
    particles = particles.to(embedding_table.dtype)
    mask = prompts.mask
    output = reference(input_ids=prompts.ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True)
    cache, next_logits = output.cache, output.logits[:, -1]
    next_position = mask.sum(1, keepdim=True)
    chosen_tokens = []
    for t in range(length):
        candidates = support_top_k(next_logits, top_k, excluded_token_ids)  # [R, k]
        distances = (embedding_table[candidates] - particles[:, t, None, :]).pow(2).sum(-1)
        nearest = candidates.gather(1, distances.argmin(1, keepdim=True))[:, 0]
        token = torch.where(movable[:, t].bool(), nearest, responses.ids[:, t])
        chosen_tokens.append(token)
        if t + 1 == length:
            break
        mask = torch.cat([mask, responses.mask[:, t : t + 1]], dim=1)
        output = reference(input_ids=token[:, None], attention_mask=mask, position_ids=next_position, cache=cache, use_cache=True)
        cache, next_logits = output.cache, output.logits[:, -1]
        next_position = next_position + 1
    return TokenBatch(torch.stack(chosen_tokens, dim=1), responses.mask.clone())


def support_top_k(logits: torch.Tensor, top_k: int, excluded_token_ids: list[int]) -> torch.Tensor:
    """Ids of the k most likely next tokens [R, k], never one of `excluded_token_ids`."""
    logits = logits.float().clone()
    logits[:, excluded_token_ids] = float("-inf")
    return logits.topk(top_k, dim=-1).indices
