"""pm2 entry point: ``pm2 start neurons/validator.py --interpreter .venv/bin/python -- [--flags]``.

It only wires settings, logging and the service; everything else lives in ``validator/``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Build the settings from ``argv`` and the environment, then run the daemon until signalled."""
    import asyncio

    from pydantic import ValidationError

    from validator.cli import run_daemon
    from validator.logging import configure_logging
    from validator.settings import load_settings

    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_daemon(settings))


if __name__ == "__main__":
    # Run as a script, Python puts neurons/ first on sys.path, where this very file would shadow the
    # `validator` package; the repository root has to come first instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    sys.exit(main(sys.argv[1:]))
