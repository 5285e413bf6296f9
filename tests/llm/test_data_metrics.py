"""Loading the public layouts from local files, and the metrics."""

import json
import math

import pytest

torch = pytest.importorskip("torch")

from vgf.llm.data import DataFormatError, load_preference_pairs, load_prompts
from vgf.llm.metrics import best_of_n_kl, donsker_varadhan_kl, win_rate


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_prompt_chosen_rejected_jsonl_and_parquet(tmp_path):
    rows = [{"prompt": "Q: hi", "chosen": " hello", "rejected": " go away"}]
    pairs = load_preference_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == ("Q: hi", " hello", " go away")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert load_preference_pairs(tmp_path / "p.parquet") == pairs
    assert load_prompts(tmp_path / "p.parquet") == ["Q: hi"]


def test_anthropic_hh_dialogues_split_at_the_last_assistant_turn(tmp_path):
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:"
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": shared + " Sure.", "rejected": shared + " No."}])
    (pair,) = load_preference_pairs(path)
    assert pair.prompt == shared and pair.chosen == " Sure." and pair.rejected == " No."


def test_tldr_layouts(tmp_path):
    comparison = {"info": {"post": "My cat...", "title": "Cat", "subreddit": "cats"}, "summaries": [{"text": "a"}, {"text": "b"}], "choice": 1}
    (pair,) = load_preference_pairs(write_jsonl(tmp_path / "cmp.jsonl", [comparison]))
    assert pair.prompt == "SUBREDDIT: r/cats\nTITLE: Cat\nPOST: My cat...\nTL;DR:" and pair.chosen == " b" and pair.rejected == " a"
    prompts = load_prompts(write_jsonl(tmp_path / "sft.jsonl", [{"post": "Long story", "summary": "short"}]))
    assert prompts == ["POST: Long story\nTL;DR:"]


def test_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n" + json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl line 2: missing key 'rejected'"):
        load_preference_pairs(path)
    path.write_text("{not json\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl line 1: not valid JSON"):
        load_prompts(path)
    with pytest.raises(DataFormatError, match=r"line 1: key 'prompt' must be a string"):
        load_prompts(write_jsonl(tmp_path / "num.jsonl", [{"prompt": 3}]))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_prompts(tmp_path / "missing.jsonl")


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx(2.5 / 4)
    with pytest.raises(ValueError, match="paired"):
        win_rate([1.0], [1.0, 2.0])


def test_best_of_n_kl():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_donsker_varadhan_kl_is_exact_for_a_reward_tilted_sampler():
    # mu: r ~ N(0, 1); pi = mu * exp(t r) / Z: r ~ N(t, 1), KL = t^2 / 2, reached by the witness f = t r.
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(300, 400, 1, generator=generator, dtype=torch.float64)
    tilted = 1.0 + torch.randn(300, 1, generator=generator, dtype=torch.float64)
    same = torch.randn(300, 1, generator=generator, dtype=torch.float64)
    assert donsker_varadhan_kl(tilted, base) == pytest.approx(0.5, abs=0.08)
    assert donsker_varadhan_kl(same, base) < 0.02
    with pytest.raises(ValueError, match=r"\[R, M, F\]"):
        donsker_varadhan_kl(tilted, base[:10])
