"""Metric rows to JSONL and CSV, both rewritten atomically on every row (CSV with the union of columns).

A row is in a file completely or not at all: a kill or a full disk while it is written leaves the rows before it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from vgf.training.checkpoint import atomic_write_text


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Holds every row of a run; `truncate_after(step)` drops rows a resumed run will write again."""

    def __init__(self, run_dir: Path):
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict] = []
        if self.jsonl_path.exists():
            for line in self.jsonl_path.read_text().splitlines():
                if line.strip():
                    try:
                        self.rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a torn last line from a killed run

    def truncate_after(self, step: int) -> None:
        self.rows = [row for row in self.rows if row["step"] <= step]
        self._flush()

    def log(self, row: dict) -> None:
        self.rows.append({key: _clean(value) for key, value in row.items()})
        try:
            self._flush()
        except OSError:  # a full disk: the files keep the rows before this one, and so does the logger
            self.rows.pop()
            raise

    def _flush(self) -> None:
        atomic_write_text(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in self.rows))
        columns: list[str] = []
        for row in self.rows:
            columns.extend(key for key in row if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, buffer.getvalue())
