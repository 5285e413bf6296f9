"""Metric rows to JSONL (appended) and CSV (rewritten atomically with the union of columns)."""

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
        self._flush()

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
