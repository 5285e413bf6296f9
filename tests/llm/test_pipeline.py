"""VGF decoding, projection and fine-tuning on the tiny testbed (built once, in seconds)."""

import json
import time

import pytest

torch = pytest.importorskip("torch")

from vgf.llm.cli import main as llm_main
from vgf.llm.data import load_prompts
from vgf.llm.decode import DecodeConfig, movable_positions, transport_responses, vgf_decode
from vgf.llm.project import project_to_reference_top_k, support_top_k
from vgf.llm.reward import load_reward_model
from vgf.llm.sampler import encode_prompts, load_causal_lm, position_ids_from_mask, sample_continuations
from vgf.llm.testbed import PRESETS, build_testbed


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    paths = build_testbed(tmp_path_factory.mktemp("testbed"), PRESETS["tiny"], log=lambda message: None)
    policy, tokenizer = load_causal_lm(str(paths.base))
    reward, _ = load_reward_model(str(paths.proxy_reward))
    prompts = load_prompts(paths.eval_prompts)[:6]
    return paths, policy, tokenizer, reward, prompts


def test_budget_zero_is_best_of_n(testbed):
    _, policy, tokenizer, reward, prompts = testbed
    config = DecodeConfig(num_particles=5, budget=0, max_new_tokens=10, seed=3)
    decoded = vgf_decode(policy, tokenizer, reward, prompts, config)

    prompt_batch = encode_prompts(tokenizer, prompts)
    samples = sample_continuations(policy, tokenizer, prompt_batch, 5, 10, seed=3)
    with torch.no_grad():
        scores = reward.score_tokens(prompt_batch.repeat_each(5), samples).reshape(len(prompts), 5)
    best = torch.arange(len(prompts)) * 5 + scores.argmax(1)
    assert torch.equal(decoded.responses.ids[:, : samples.ids.shape[1]], samples.ids[best])
    assert torch.allclose(decoded.rewards, scores.max(1).values)


def test_transport_raises_the_proxy_reward_on_a_fixed_batch(testbed):
    _, policy, tokenizer, reward, prompts = testbed
    prompt_batch = encode_prompts(tokenizer, prompts).repeat_each(4)
    samples = sample_continuations(policy, tokenizer, encode_prompts(tokenizer, prompts), 4, 10, seed=0)
    movable = movable_positions(samples, tokenizer.eos_token_id)
    learning_rate = 0.5 * reward.embedding_table.std().item()
    with torch.no_grad():
        before = reward.score_tokens(prompt_batch, samples).mean()
        moved = transport_responses(reward, prompt_batch, samples, movable, 4, 5, learning_rate, alpha=0.1)
        after = reward.score_embedded(prompt_batch, moved, samples.mask).mean()
    assert after > before + 0.05


def test_projection_stays_in_the_reference_top_k(testbed):
    _, policy, tokenizer, reward, prompts = testbed
    prompt_batch = encode_prompts(tokenizer, prompts)
    samples = sample_continuations(policy, tokenizer, prompt_batch, 1, 10, seed=1)
    movable = movable_positions(samples, tokenizer.eos_token_id)
    particles = torch.randn(*samples.ids.shape, reward.embedding_table.shape[1], generator=torch.Generator().manual_seed(0))
    excluded = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    projected = project_to_reference_top_k(policy, prompt_batch, samples, movable, particles, reward.embedding_table, 3, excluded)

    assert torch.equal(projected.ids[movable == 0], samples.ids[movable == 0])
    ids = torch.cat([prompt_batch.ids, projected.ids], 1)
    mask = torch.cat([prompt_batch.mask, projected.mask], 1)
    with torch.no_grad():
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    width = prompt_batch.ids.shape[1]
    for t in range(projected.ids.shape[1]):
        allowed = support_top_k(logits[:, width - 1 + t], 3, excluded)
        inside = (allowed == projected.ids[:, t, None]).any(1)
        assert inside[movable[:, t].bool()].all(), f"position {t}: token outside the reference's top-3"


def test_reward_ignores_padding(testbed):
    _, _, tokenizer, reward, prompts = testbed
    from vgf.llm.sampler import encode_responses

    responses = ["whiskers purr good", "the storm is very bad and wet today"]
    with torch.no_grad():
        together = reward.score_tokens(encode_prompts(tokenizer, prompts[:2]), encode_responses(tokenizer, responses, 16))
        alone = torch.cat([reward.score_tokens(encode_prompts(tokenizer, [p]), encode_responses(tokenizer, [r], 16)) for p, r in zip(prompts[:2], responses)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_full_pipeline_on_the_command_line_in_under_a_minute(tmp_path):
    # CPU time, not wall time: a shared CI machine may stall the process without it doing more work.
    start = time.process_time()
    bed = tmp_path / "bed"
    assert llm_main(["testbed", "--preset", "tiny", "--out", str(bed)]) == 0
    assert llm_main(["train-reward", "--model", str(bed / "base"), "--pairs", str(bed / "data/train_preferences.jsonl"),
                     "--out", str(tmp_path / "rm"), "--epochs", "1"]) == 0
    common = ["--model", str(bed / "base"), "--reward", str(tmp_path / "rm"), "--particles", "4", "--max-new-tokens", "10", "--device", "cpu"]
    assert llm_main(["generate", *common, "--prompts", str(bed / "data/eval_prompts.jsonl"), "--budget", "2", "--out", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(load_prompts(bed / "data/eval_prompts.jsonl")) and all(row["response"] for row in rows)
    assert llm_main(["finetune", *common, "--prompts", str(bed / "data/train_prompts.jsonl"), "--budget", "1", "--rounds", "1",
                     "--prompts-per-round", "16", "--sft-steps", "3", "--out", str(tmp_path / "tuned")]) == 0
    for extra in (["--budget", "2"], ["--sample"]):
        model = str(tmp_path / "tuned") if extra == ["--sample"] else str(bed / "base")
        out = tmp_path / f"eval{len(extra)}.json"
        assert llm_main(["eval", *common, "--model", model, "--reference", str(bed / "base"),
                         "--pairs", str(bed / "data/eval_preferences.jsonl"), "--out", str(out), *extra]) == 0
        result = json.loads(out.read_text())
        assert 0.0 <= result["win_vs_reference"] <= 1.0 and 0.0 <= result["win_vs_chosen"] <= 1.0
    assert time.process_time() - start < 60
