"""Logging, configured once at start with structlog.

Console lines on a terminal, JSON lines otherwise (pm2 log files, log shippers). Modules get a logger
with ``structlog.get_logger(__name__)`` and bind the miner they work on (uid, hotkey, repo, revision) so
an operator can follow one miner through the log with a single grep.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from evaluation.untrusted_text import for_log

# Chatty third-party loggers that would drown the validator's own lines at info level.
_QUIET_LIBRARIES = (
    "urllib3",
    "docker",
    "filelock",
    "huggingface_hub",
    "datasets",
    "websockets",
    "asyncio",
    "httpx",
    "httpx2",
    "httpcore",
    "aiohttp.access",
)


def _escaped(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return for_log(value)
    if depth < 3 and isinstance(value, dict):
        return {_escaped(k, depth + 1): _escaped(v, depth + 1) for k, v in value.items()}
    if depth < 3 and isinstance(value, list | tuple):
        return type(value)(_escaped(v, depth + 1) for v in value)
    return value


def escape_untrusted(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Escape control, format and newline characters in every value of a log line.

    Failure reasons, build-log tails and answers carry miner text; escaped, one event is one line and a
    terminal never runs a miner's escape sequence (see ``evaluation.untrusted_text``).
    """
    for key, value in event_dict.items():
        event_dict[key] = _escaped(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to one renderer on ``stream``."""
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        escape_untrusted,
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
