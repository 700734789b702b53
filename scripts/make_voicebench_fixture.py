"""Build the local VoiceBench fixture (our questions spoken by espeak-ng) in the hub's parquet layout.

Usage: python scripts/make_voicebench_fixture.py --out DIR [--subset NAME ...] [--voice en-us] [--rate 160]
       [--workers 4]
Without --subset every subset is built (sd-qa: usa and gbr; mmsu: four subjects). Needs espeak-ng
(apt-get install espeak-ng). Rebuilding with the same questions and settings is a no-op.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.errors import InfrastructureError
from evaluation.voicebench.fixture import DEFAULT_WORKERS, available_subsets, build_fixture


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the fixture, print where it is; exit status 1 on a build failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (hub layout inside)")
    parser.add_argument(
        "--subset",
        action="append",
        choices=available_subsets(),
        help="subset to build; repeat for several (default: all)",
    )
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice (default: en-us)")
    parser.add_argument("--rate", type=int, default=160, help="speaking rate in words per minute")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="espeak-ng processes run at once"
    )
    args = parser.parse_args(argv)
    try:
        out = build_fixture(args.out, args.subset, voice=args.voice, rate_wpm=args.rate, workers=args.workers)
    except (InfrastructureError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
