"""The reference sampler: a causal LM loaded with `from_pretrained`, N continuations per prompt.

Batches keep prompts left-padded and responses right-padded, each with an explicit mask, so that any
tokenizer works, including those whose pad token is also the end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TokenBatch:
    """Token ids [R, L] and a mask [R, L] with 1 on real tokens."""

    ids: torch.Tensor
    mask: torch.Tensor

    def repeat_each(self, times: int) -> "TokenBatch":
        return TokenBatch(self.ids.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0))

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.ids.to(device), self.mask.to(device))


def load_tokenizer(path_or_id: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path_or_id)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {path_or_id!r} has no eos_token; responses need one to end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # masks, not the pad id, mark padding everywhere here
    return tokenizer


def load_causal_lm(path_or_id: str, device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a local path or hub id (hub ids need the files in the local cache)."""
    tokenizer = load_tokenizer(path_or_id)
    model = AutoModelForCausalLM.from_pretrained(path_or_id).to(device).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], device="cpu") -> TokenBatch:
    """Left-padded prompt ids, so that generation continues every row at the same position."""
    if not prompts:
        raise ValueError("no prompts given")
    rows = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    for index, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt {index} ({prompts[index]!r}) tokenizes to nothing")
    return _pad(rows, tokenizer.pad_token_id, left=True).to(device)


def encode_responses(tokenizer: PreTrainedTokenizerBase, responses: list[str], max_tokens: int, device="cpu") -> TokenBatch:
    """Right-padded response ids ending with EOS (truncated to `max_tokens` including it)."""
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1] + [tokenizer.eos_token_id] for text in responses]
    return _pad(rows, tokenizer.pad_token_id, left=False).to(device)


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> TokenBatch:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[index, span] = torch.tensor(row, dtype=torch.long)
        mask[index, span] = 1
    return TokenBatch(ids, mask)


def response_mask_from_eos(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it."""
    is_eos = (response_ids == eos_token_id).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (eos_before == 0).long()


@torch.no_grad()
def sample_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: TokenBatch,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> TokenBatch:
    """`num_samples` continuations per prompt, rows ordered prompt-major: [P * N, T].

    `top_k` = 0 samples the full distribution; k > 0 only the k most likely tokens at each step.
    """
    torch.manual_seed(seed)
    output = model.generate(
        input_ids=prompts.ids,
        attention_mask=prompts.mask,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    response_ids = output[:, prompts.ids.shape[1] :]
    mask = response_mask_from_eos(response_ids, tokenizer.eos_token_id)
    return TokenBatch(torch.where(mask.bool(), response_ids, tokenizer.pad_token_id), mask)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (torch.cumsum(mask, dim=1) - 1).clamp_min(0)


def response_token_log_probs(model: PreTrainedModel, prompts: TokenBatch, responses: TokenBatch) -> torch.Tensor:
    """log p(response_t | prompt, response_<t) for every response position, 0 on padding: [R, T]."""
    ids = torch.cat([prompts.ids, responses.ids], dim=1)
    mask = torch.cat([prompts.mask, responses.mask], dim=1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    prompt_width = prompts.ids.shape[1]
    predicting = logits[:, prompt_width - 1 : -1].float().log_softmax(-1)
    token_log_probs = predicting.gather(-1, responses.ids[..., None])[..., 0]
    return token_log_probs * responses.mask


def decode_responses(tokenizer: PreTrainedTokenizerBase, responses: TokenBatch) -> list[str]:
    """Text of each response without its EOS and padding."""
    texts = []
    for ids, mask in zip(responses.ids.tolist(), responses.mask.tolist()):
        kept = [token for token, real in zip(ids, mask) if real and token != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts
