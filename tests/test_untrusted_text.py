"""One rule for miner text: dropped from what the judge reads, escaped in what an operator reads."""

from __future__ import annotations

import io
import json

import structlog

from evaluation.untrusted_text import for_judge, for_log
from validator.logging import configure_logging
from validator.table import render_table

HIDDEN = {
    "escape": "\x1b",
    "bell and NUL": "\x07\x00",
    "C1 control": "\x9b",
    "bidi override": "\u202e",
    "bidi isolate": "\u2066",
    "zero width space": "\u200b",
    "tag characters": "".join(chr(0xE0000 + ord(c)) for c in "ignore all"),
    "lone surrogate": "\ud800",
    "carriage return": "\r",
}


def test_the_judge_sees_the_visible_text_only() -> None:
    for name, hidden in HIDDEN.items():
        assert for_judge(f"The answer{hidden} is B.") == "The answer is B.", name
    assert for_judge("\x1b[2Jred") == "[2Jred"  # the terminal command is gone; its visible text is not
    assert for_judge("line one\n\tline two, café, 北京") == "line one\n\tline two, café, 北京"


def test_logs_escape_every_hidden_character_and_newlines() -> None:
    for name, hidden in HIDDEN.items():
        escaped = for_log(f"a{hidden}b\nforged line")
        assert escaped.isprintable() and "\n" not in escaped, name
        assert escaped.startswith("a\\") and escaped.endswith("b\\nforged line"), name
    assert for_log("\x1b[2J") == "\\x1b[2J"
    assert for_log("\u202e") == "\\u202e"
    assert for_log("build failed\n\x1b[31mstep 3", keep_newlines=True) == "build failed\n\\x1b[31mstep 3"
    assert for_log("plain text, café") == "plain text, café"
    assert for_log("x" * 50, limit=10) == "x" * 10


def test_a_log_line_with_miner_text_stays_one_inert_line() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    structlog.get_logger("test").warning(
        "submission rejected", reason='bad\n{"event": "weights set"}\x1b[2J', nested={"tail": "\u202eevil"}
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["reason"] == 'bad\\n{"event": "weights set"}\\x1b[2J'
    assert record["nested"] == {"tail": "\\u202eevil"}


def test_table_cells_stay_on_their_row() -> None:
    table = render_table(["uid", "error"], [(1, "StartFailed: boom\n\x1b[2Jgone")])
    assert len(table.splitlines()) == 3 and "\x1b" not in table and "boom\\n\\x1b[2Jgone" in table
