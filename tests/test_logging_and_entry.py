"""Logging carries the bound miner context; the pm2 entry point refuses bad settings cleanly."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import structlog

from validator.logging import configure_logging

ROOT = Path(__file__).resolve().parents[1]


def test_json_lines_carry_bound_context_and_stdlib_records() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        with structlog.contextvars.bound_contextvars(uid=3, hotkey="5Abc", repo="ns/m", revision="abc123"):
            structlog.get_logger("t").info("evaluated", score=41.5)
        logging.getLogger("some.library").warning("from the standard library")
        structlog.get_logger("t").debug("hidden at info level")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "evaluated" and lines[0]["uid"] == 3 and lines[0]["revision"] == "abc123"
    assert lines[1]["event"] == "from the standard library" and lines[1]["level"] == "warning"
    assert len(lines) == 2


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    try:
        structlog.get_logger("t").info("hello", uid=1)
    finally:
        logging.getLogger().handlers.clear()
    assert "hello" in out.getvalue() and not out.getvalue().lstrip().startswith("{")


def test_pm2_entry_point_rejects_invalid_settings() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "neurons" / "validator.py"), "--miner-concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "miner_concurrency" in proc.stderr
