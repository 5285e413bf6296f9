"""Prompts and preference pairs from local JSONL or Parquet files, in the layouts the public datasets use.

Accepted rows:
* `prompt`, `chosen`, `rejected` (strings): a preference pair as most preference datasets store it;
* `chosen`, `rejected` only, holding whole Anthropic HH dialogues: the prompt is the shared text up to and
  including the last "\\n\\nAssistant:";
* TL;DR comparisons: `info` (with `post`, optional `title`, `subreddit`), `summaries` (a list of objects
  with `text`) and `choice` (the index of the preferred summary);
* TL;DR SFT rows: `post` (optional `title`, `subreddit`) and `summary` (read as prompts, and as pairs
  only where a `rejected` is present).
Errors name the file, the line (JSONL) or row (Parquet), and the key.
"""

from __future__ import annotations

import json
from pathlib import Path

from vgf.llm.reward import PreferencePair

HH_ASSISTANT = "\n\nAssistant:"


class DataFormatError(ValueError):
    pass


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """(location, row) for every record of a .jsonl/.json-lines or .parquet file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"{path} row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    if path.suffix not in {".jsonl", ".json"}:
        raise DataFormatError(f"{path}: expected a .jsonl or .parquet file")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((f"{path} line {number}", row))
    if not rows:
        raise DataFormatError(f"{path}: no records")
    return rows


def text_field(location: str, row: dict, key: str) -> str:
    if key not in row:
        raise DataFormatError(f"{location}: missing key {key!r} (keys present: {sorted(row)})")
    value = row[key]
    if not isinstance(value, str):
        raise DataFormatError(f"{location}: key {key!r} must be a string, got {type(value).__name__}")
    return value


def tldr_prompt(location: str, fields: dict) -> str:
    """The usual TL;DR prompt: subreddit and title when present, the post, then 'TL;DR:'."""
    lines = []
    if fields.get("subreddit"):
        lines.append(f"SUBREDDIT: r/{fields['subreddit']}")
    if fields.get("title"):
        lines.append(f"TITLE: {fields['title']}")
    lines.append(f"POST: {text_field(location, fields, 'post')}")
    return "\n".join(lines) + "\nTL;DR:"


def split_hh_dialogue(location: str, chosen: str, rejected: str) -> PreferencePair:
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        raise DataFormatError(f"{location}: no 'prompt' key and 'chosen' has no {HH_ASSISTANT!r} turn to split the dialogue at")
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prompt):
        raise DataFormatError(f"{location}: 'chosen' and 'rejected' do not share the dialogue before the last assistant turn")
    return PreferencePair(prompt, chosen[len(prompt) :], rejected[len(prompt) :])


def pair_from_row(location: str, row: dict) -> PreferencePair:
    if "info" in row and "summaries" in row:
        summaries, choice = row["summaries"], row.get("choice")
        if not isinstance(summaries, list) or len(summaries) != 2:
            raise DataFormatError(f"{location}: key 'summaries' must be a list of 2 summaries")
        if choice not in (0, 1):
            raise DataFormatError(f"{location}: key 'choice' must be 0 or 1, got {choice!r}")
        texts = [text_field(f"{location} summaries[{i}]", s, "text") for i, s in enumerate(summaries)]
        return PreferencePair(tldr_prompt(f"{location} info", row["info"]), " " + texts[choice].strip(), " " + texts[1 - choice].strip())
    chosen, rejected = text_field(location, row, "chosen"), text_field(location, row, "rejected")
    if "prompt" in row:
        return PreferencePair(text_field(location, row, "prompt"), chosen, rejected)
    return split_hh_dialogue(location, chosen, rejected)


def load_preference_pairs(path: str | Path) -> list[PreferencePair]:
    return [pair_from_row(location, row) for location, row in read_rows(path)]


def prompt_from_row(location: str, row: dict) -> str:
    if "prompt" in row:
        return text_field(location, row, "prompt")
    if "post" in row:
        return tldr_prompt(location, row)
    if "info" in row:
        return tldr_prompt(f"{location} info", row["info"])
    if "chosen" in row and "rejected" in row:
        return pair_from_row(location, row).prompt
    raise DataFormatError(f"{location}: no prompt found: expected key 'prompt', 'post', 'info' or 'chosen'/'rejected' (keys present: {sorted(row)})")


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from any accepted layout, in file order."""
    return [prompt_from_row(location, row) for location, row in read_rows(path)]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
