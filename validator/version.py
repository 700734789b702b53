"""The validator's version, and the version_key it puts on its weight sets."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "voice-validator"


def package_version() -> str:
    """The installed package's version ("0+unknown" when run from a tree that was never installed)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "0+unknown"


def version_key(text: str | None = None) -> int:
    """``major * 10000 + minor * 100 + patch``: 0.1.0 -> 100, 1.2.3 -> 10203.

    Subnets raise the minimum accepted key to retire old validators; a monotonic integer derived from
    the release makes that a matter of tagging a release.
    """
    parts = (text or package_version()).split("+")[0].split(".")
    numbers = [int(p) if p.isdigit() else 0 for p in [*parts, "0", "0", "0"][:3]]
    if any(n >= 100 for n in numbers[1:]):
        raise ValueError(f"version {text!r}: minor and patch must stay below 100 for a version_key")
    return numbers[0] * 10_000 + numbers[1] * 100 + numbers[2]
