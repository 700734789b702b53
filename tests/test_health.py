"""The health contract read from raw bytes, as the sandbox's readiness poll and the miner client do."""

from __future__ import annotations

import json

import pytest

from evaluation.health import health_from_body


@pytest.mark.parametrize(
    "body",
    [b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000, b"\xff\xfe", b"{", b""],
    ids=["nested-list", "nested-object", "not-utf8", "truncated", "empty"],
)
def test_malformed_health_is_not_ready_and_never_raises(body: bytes) -> None:
    health = health_from_body(body)
    assert not health.ready and health.status == "malformed" and health.error == "health answer is not JSON"


def test_a_loaded_model_is_ready() -> None:
    body = json.dumps({"status": "healthy", "initialization_status": {"model_loaded": True, "error": None}})
    assert health_from_body(body.encode()).ready
