"""Logging, configured once at start with structlog.

Console lines on a terminal, JSON lines otherwise (pm2 log files, log shippers). Modules get a logger
with ``structlog.get_logger(__name__)`` and bind the miner they work on (uid, hotkey, repo, revision) so
an operator can follow one miner through the log with a single grep.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

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
