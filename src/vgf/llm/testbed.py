"""A small but real RLHF setting that builds here in minutes, with no download.

* A word-level language with known structure: a prompt names a topic ("about cats today slowly :"), a
  response is 6-10 words mixing on-topic words, words of other topics, positive and negative words and
  fillers, drawn by a fixed random process.
* The gold reward is a program (`gold_reward`): +1 per distinct on-topic word, +0.5 per positive word,
  -0.5 per negative word, -1 per off-topic word, -0.75 per repeated content word. The repetition and
  distinctness terms are rare in the data, so a reward model learnt from pairs sees little of them.
* A GPT-2-architecture model, configured small, is trained on the corpus: the base (reference) model.
* Preference pairs are two corpus responses to one prompt, labelled by the gold reward with
  Bradley-Terry noise; a proxy reward model (initialised from the base model, embeddings frozen) is
  trained on them. Methods optimise the proxy; evaluation reports the gold reward.
* A quarter of the prompts are held out of every training set for evaluation.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from vgf.llm.data import load_preference_pairs, write_jsonl
from vgf.llm.finetune import SupervisedConfig, encode_pairs, supervised_finetune
from vgf.llm.reward import BradleyTerryConfig, preference_accuracy, reward_from_model, train_bradley_terry
from vgf.llm.sampler import load_tokenizer

PAD, EOS, UNK = "[PAD]", "[EOS]", "[UNK]"
TOPICS = {
    "cats": ["whiskers", "purr", "paws", "kitten", "meow", "fur"],
    "rain": ["cloud", "storm", "wet", "drops", "umbrella", "puddle"],
    "code": ["bug", "compile", "python", "loop", "function", "test"],
    "food": ["bread", "soup", "spicy", "fruit", "cheese", "bake"],
}
POSITIVE = ["good", "great", "lovely", "happy", "bright", "calm"]
NEGATIVE = ["bad", "awful", "sad", "dull", "angry", "broken"]
FILLERS = ["the", "a", "and", "is", "very", "so", "it", "then", "with", "of"]
STYLES = ["today", "tonight", "quickly", "slowly", "gently", "again", "always", "maybe"]
PROMPT_WORDS = ["about", ":"]
# How the corpus draws each response word: on-topic, other topic, positive, negative, filler.
WORD_KIND_WEIGHTS = {"topic": 0.25, "other": 0.10, "positive": 0.12, "negative": 0.12, "filler": 0.41}


def vocabulary() -> list[str]:
    words = [PAD, EOS, UNK] + PROMPT_WORDS + list(TOPICS) + STYLES + FILLERS + POSITIVE + NEGATIVE
    return words + [word for topic_words in TOPICS.values() for word in topic_words]


def prompt_topic(prompt: str) -> str:
    words = prompt.split()
    if len(words) < 2 or words[1] not in TOPICS:
        raise ValueError(f"testbed prompt {prompt!r} does not name a topic ({', '.join(TOPICS)}) as its second word")
    return words[1]


def gold_reward(prompt: str, response: str) -> float:
    """The program that defines what is good in the testbed (see the module docstring)."""
    topic = prompt_topic(prompt)
    words = response.split()
    on_topic = set(TOPICS[topic])
    off_topic = {word for name, topic_words in TOPICS.items() if name != topic for word in topic_words}
    content = [word for word in words if word not in FILLERS]
    repeats = len(content) - len(set(content))
    return (
        1.0 * len({word for word in words if word in on_topic})
        + 0.5 * sum(word in POSITIVE for word in words)
        - 0.5 * sum(word in NEGATIVE for word in words)
        - 1.0 * sum(word in off_topic for word in words)
        - 0.75 * repeats
    )


def sample_response(rng: random.Random, topic: str) -> str:
    others = [word for name, topic_words in TOPICS.items() if name != topic for word in topic_words]
    pools = {"topic": TOPICS[topic], "other": others, "positive": POSITIVE, "negative": NEGATIVE, "filler": FILLERS}
    kinds, weights = zip(*WORD_KIND_WEIGHTS.items())
    words = []
    for _ in range(rng.randint(6, 10)):
        kind = rng.choices(kinds, weights)[0]
        if words and words[-1] == "very":  # a little grammar: "very" is followed by an adjective
            kind = rng.choice(["positive", "negative"])
        words.append(rng.choice(pools[kind]))
    return " ".join(words)


def all_prompts() -> list[str]:
    return [f"about {topic} {first} {second} :" for topic in TOPICS for first, second in itertools.permutations(STYLES, 2)]


@dataclass
class TestbedConfig:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    corpus_size: int = 20000
    lm_steps: int = 1500
    lm_batch_size: int = 64
    lm_learning_rate: float = 3e-3
    preference_pairs: int = 12000
    reward_epochs: int = 3
    reward_learning_rate: float = 1e-3
    eval_pairs_per_prompt: int = 4
    seed: int = 0


PRESETS = {
    "small": TestbedConfig(),
    "tiny": TestbedConfig(n_layer=1, n_embd=32, n_head=2, corpus_size=3000, lm_steps=150, preference_pairs=800, reward_epochs=1, eval_pairs_per_prompt=1),
}


@dataclass
class TestbedPaths:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def proxy_reward(self) -> Path:
        return self.root / "proxy_reward"

    @property
    def train_preferences(self) -> Path:
        return self.root / "data" / "train_preferences.jsonl"

    @property
    def eval_preferences(self) -> Path:
        return self.root / "data" / "eval_preferences.jsonl"

    @property
    def train_prompts(self) -> Path:
        return self.root / "data" / "train_prompts.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.root / "data" / "eval_prompts.jsonl"

    @property
    def info(self) -> Path:
        return self.root / "testbed.json"


def build_tokenizer() -> PreTrainedTokenizerFast:
    words = vocabulary()
    core = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def preference_rows(rng: random.Random, prompts: list[str], count: int) -> list[dict]:
    """Two corpus responses per prompt, the preferred one drawn with P = sigmoid(gold difference)."""
    rows = []
    for index in range(count):
        prompt = prompts[index % len(prompts)]
        first, second = (sample_response(rng, prompt_topic(prompt)) for _ in range(2))
        margin = gold_reward(prompt, first) - gold_reward(prompt, second)
        first_wins = rng.random() < 1.0 / (1.0 + math.exp(-margin))
        chosen, rejected = (first, second) if first_wins else (second, first)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def build_testbed(root: str | Path, config: TestbedConfig, log: Callable[[str], None] = print) -> TestbedPaths:
    """Write the data, train the base model and the proxy reward model under `root`; returns the paths."""
    paths = TestbedPaths(Path(root))
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    prompts = all_prompts()
    rng.shuffle(prompts)
    held_out = len(prompts) // 4
    eval_prompts, train_prompts = sorted(prompts[:held_out]), sorted(prompts[held_out:])
    write_jsonl(paths.train_prompts, [{"prompt": p} for p in train_prompts])
    write_jsonl(paths.eval_prompts, [{"prompt": p} for p in eval_prompts])
    write_jsonl(paths.train_preferences, preference_rows(rng, train_prompts, config.preference_pairs))
    write_jsonl(paths.eval_preferences, preference_rows(rng, eval_prompts, len(eval_prompts) * config.eval_pairs_per_prompt))

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(paths.base)
    tokenizer = load_tokenizer(str(paths.base))
    model_config = GPT2Config(
        vocab_size=len(vocabulary()), n_positions=48, n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    base = GPT2LMHeadModel(model_config)
    corpus_prompts = [train_prompts[i % len(train_prompts)] for i in range(config.corpus_size)]
    corpus_responses = [sample_response(rng, prompt_topic(p)) for p in corpus_prompts]
    prompt_batch, response_batch = encode_pairs(tokenizer, corpus_prompts, corpus_responses, max_response_tokens=16)
    log(f"training the base model ({sum(p.numel() for p in base.parameters())} parameters, {config.lm_steps} steps)")
    losses = supervised_finetune(base, tokenizer, prompt_batch, response_batch,
                                 SupervisedConfig(steps=config.lm_steps, batch_size=config.lm_batch_size, learning_rate=config.lm_learning_rate, seed=config.seed))
    base.generation_config.pad_token_id = tokenizer.pad_token_id
    base.save_pretrained(paths.base)

    log(f"training the proxy reward model on {config.preference_pairs} gold-labelled pairs")
    proxy = AutoModelForSequenceClassification.from_pretrained(paths.base, num_labels=1)
    pairs = load_preference_pairs(paths.train_preferences)
    train_bradley_terry(proxy, tokenizer, pairs, BradleyTerryConfig(epochs=config.reward_epochs, learning_rate=config.reward_learning_rate, seed=config.seed))
    proxy.save_pretrained(paths.proxy_reward)
    tokenizer.save_pretrained(paths.proxy_reward)
    eval_pairs = load_preference_pairs(paths.eval_preferences)
    gold_accuracy = sum(gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in eval_pairs) / len(eval_pairs)
    info = {
        "config": asdict(config),
        "base_final_loss": losses[-1],
        "proxy_accuracy_on_eval_pairs": preference_accuracy(reward_from_model(proxy), tokenizer, eval_pairs),
        "gold_accuracy_on_eval_pairs": gold_accuracy,
        "train_prompts": len(train_prompts),
        "eval_prompts": len(eval_prompts),
    }
    paths.info.write_text(json.dumps(info, indent=2))
    log(f"testbed ready in {paths.root}: base loss {losses[-1]:.3f}, proxy accuracy {info['proxy_accuracy_on_eval_pairs']:.3f} "
        f"on held-out pairs (the gold reward itself: {gold_accuracy:.3f}, labels are noisy)")
    return paths
