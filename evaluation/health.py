"""The miner health contract: parse ``GET /api/v1/health`` strictly.

A miner is ready only when it says ``initialization_status.model_loaded`` is true; a bare HTTP 200 is not
enough (the old validator accepted any 200 and then scored a half-started model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Health:
    """What a miner reports about itself."""

    status: str
    model_loaded: bool
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.model_loaded and self.error is None


def parse_health(payload: object) -> Health:
    """Read a health payload; anything malformed counts as not ready rather than raising."""
    if not isinstance(payload, dict):
        return Health(status="malformed", model_loaded=False, error="health payload is not a JSON object")
    status = payload.get("status")
    init = payload.get("initialization_status")
    loaded = isinstance(init, dict) and init.get("model_loaded") is True
    error = init.get("error") if isinstance(init, dict) else None
    return Health(
        status=str(status)[:50] if status is not None else "unknown",
        model_loaded=loaded,
        error=str(error)[:MAX_ERROR_CHARS] if error else None,
    )


def health_from_body(body: bytes) -> Health:
    """Parse a raw health answer; malformed, undecodable or absurdly nested JSON is "not ready".

    Deep nesting (``[[[[...]]]]`` within the size cap) makes ``json.loads`` raise RecursionError, not
    ValueError: it is the miner's malformed answer like any other, never our crash.
    """
    try:
        payload: object = json.loads(body)
    except (ValueError, RecursionError):
        return Health(status="malformed", model_loaded=False, error="health answer is not JSON")
    return parse_health(payload)
