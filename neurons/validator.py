"""pm2 entry point: ``pm2 start neurons/validator.py --interpreter .venv/bin/python -- [--flags]``.

It is ``voice-validator run`` under the name pm2 setups expect; settings, logging and the service are
wired in ``validator/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, Python puts neurons/ first on sys.path, where this very file would shadow the
    # `validator` package; the repository root has to come first instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from validator.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
