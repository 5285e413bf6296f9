"""Tables the CLI prints stay whole when its output goes to a file or pipe (a log), where rich would assume 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from vgf.cli import PIPED_WIDTH, budget_table, make_console

HEADERS = ("budget (steps)", "success rate", "return", "D4RL normalized score", "mean distance from reference sample")


def wide_table():
    """A budget table over 80 columns wide: all its columns, a long title."""
    stats = {"success": 0.125, "return": 3012.5, "normalized_score": 93.25, "displacement": 0.5}
    return budget_table({budget: stats for budget in (0, 1, 16)}, "vgf on d4rl:halfcheetah-medium-expert-v2, seed 0, after 1000000 updates")


def test_a_table_printed_to_a_log_file_keeps_every_cell_whole(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    log = io.StringIO()
    console = make_console(file=log)
    assert not console.is_terminal and console.width == PIPED_WIDTH
    console.print(wide_table())
    text = log.getvalue()
    assert "…" not in text
    header_line = next(line for line in text.splitlines() if "budget (steps)" in line)
    assert all(header in header_line for header in HEADERS)  # one line: no header wrapped or cut
    assert "vgf on d4rl:halfcheetah-medium-expert-v2, seed 0, after 1000000 updates" in text
    assert all(value in text for value in ("0.125", "3012.50", "93.2", "0.500"))

    # What rich does on its own, which the test above guards against: at 80 columns the headers break.
    narrow = io.StringIO()
    Console(file=narrow, width=80).print(wide_table())
    assert not any(all(header in line for header in HEADERS) for line in narrow.getvalue().splitlines())


def test_columns_sets_the_width_of_a_log(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console(file=io.StringIO()).width == 100


def test_set_values_parse_as_a_shell_user_writes_them():
    from vgf.cli import override

    assert override("bandwidth_gradient=false") == ("bandwidth_gradient", False)
    assert override("bandwidth_gradient=True") == ("bandwidth_gradient", True)
    assert override("vgf_lr=0.01") == ("vgf_lr", 0.01)
    assert override("critic_layer_norm_order=post") == ("critic_layer_norm_order", "post")
    assert override("hidden_dims=(64, 64)") == ("hidden_dims", (64, 64))
