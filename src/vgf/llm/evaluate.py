"""Judging outputs: win rates against the reference model's samples and against the dataset's chosen responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vgf.llm.metrics import donsker_varadhan_kl, win_rate
from vgf.llm.reward import EmbeddingReward
from vgf.llm.sampler import encode_prompts, encode_responses

# judge(prompts, responses) -> one score per row
Judge = Callable[[list[str], list[str]], list[float]]


def gold_judge() -> Judge:
    """The testbed's programmatic gold reward."""
    from vgf.llm.testbed import gold_reward

    return lambda prompts, responses: [gold_reward(p, r) for p, r in zip(prompts, responses)]


def reward_model_judge(reward: EmbeddingReward, tokenizer, max_response_tokens: int = 64) -> Judge:
    """A (held-out, ideally stronger) reward model as the judge, for data without a gold program."""

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        device = reward.embedding_table.device
        with torch.no_grad():
            return reward.score_tokens_batched(encode_prompts(tokenizer, prompts, device),
                                               encode_responses(tokenizer, responses, max_response_tokens, device)).tolist()

    return judge


@dataclass
class Judged:
    judge_mean: float
    win_vs_reference: float
    win_vs_chosen: float | None


def judge_outputs(judge: Judge, prompts: list[str], outputs: list[str], reference: list[str], chosen: list[str] | None) -> Judged:
    """Mean judge score of `outputs` and its win rates against `reference` (and `chosen`), row by row."""
    if not len(prompts) == len(outputs) == len(reference) or (chosen is not None and len(chosen) != len(prompts)):
        raise ValueError(f"judge_outputs needs one output, reference and chosen response per prompt; got "
                         f"{len(prompts)} prompts, {len(outputs)} outputs, {len(reference)} reference, {None if chosen is None else len(chosen)} chosen")
    scores = judge(prompts, outputs)
    return Judged(
        judge_mean=sum(scores) / len(scores),
        win_vs_reference=win_rate(scores, judge(prompts, reference)),
        win_vs_chosen=None if chosen is None else win_rate(scores, judge(prompts, chosen)),
    )


def witness_kl(witnesses: list[Judge], prompts: list[str], outputs: list[str], base_samples: list[list[str]]) -> float:
    """Donsker-Varadhan KL lower bound of a sampler with rewards as witnesses; `base_samples[r]` are M base responses to prompts[r]."""
    if len(base_samples) != len(prompts) or len({len(row) for row in base_samples}) != 1:
        raise ValueError(f"witness_kl needs the same number of base samples for each of the {len(prompts)} prompts")
    per_prompt = len(base_samples[0])
    repeated = [prompt for prompt in prompts for _ in range(per_prompt)]
    flat = [text for row in base_samples for text in row]
    method = torch.tensor([w(prompts, outputs) for w in witnesses]).T
    base = torch.tensor([w(repeated, flat) for w in witnesses]).T.reshape(len(prompts), per_prompt, len(witnesses))
    return donsker_varadhan_kl(method, base)
