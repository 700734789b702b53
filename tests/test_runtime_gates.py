"""The start-up gates on what a daemon reports (its /version and /info answers as data)."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.sandbox.runtime_gates import (
    check_engine,
    check_nvidia_toolkit,
    parse_version,
    runc_is_fixed,
)


def version_info(engine: str = "20.10.24+dfsg1", runc: str = "1.2.8") -> dict[str, Any]:
    return {
        "Version": engine,
        "Components": [{"Name": "Engine", "Version": engine}, {"Name": "runc", "Version": runc}],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.1.5+ds1", (1, 1, 5)), ("v1.2.8", (1, 2, 8)), ("20.10", (20, 10, 0)), ("runc", None), ("", None)],
)
def test_parse_version(text: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ((1, 1, 12), False),  # 2024's fix only
        ((1, 2, 7), False),
        ((1, 2, 8), True),
        ((1, 3, 2), False),
        ((1, 3, 3), True),
        ((1, 4, 0), True),
        ((1, 5, 1), True),
    ],
)
def test_runc_releases_with_every_escape_fix(version: tuple[int, int, int], fixed: bool) -> None:
    assert runc_is_fixed(version) is fixed


def test_a_fixed_stack_passes() -> None:
    assert (
        check_engine(
            version_info(), {"DefaultRuntime": "runc"}, uses_runc=True, trust_runtime=False, bridge_ipv6=False
        )
        == []
    )


def test_an_old_runc_is_refused_unless_vouched_for_or_unused() -> None:
    info = version_info(runc="1.1.5+ds1")
    (refusal,) = check_engine(info, {}, uses_runc=True, trust_runtime=False, bridge_ipv6=False)
    assert refusal.component == "runc" and "1.1.5+ds1" in str(refusal) and "runsc" in str(refusal)
    assert check_engine(info, {}, uses_runc=True, trust_runtime=True, bridge_ipv6=False) == []
    assert check_engine(info, {}, uses_runc=False, trust_runtime=False, bridge_ipv6=False) == []


def test_nvidia_default_runtime_ipv6_and_old_engine_are_refused_whatever_the_trust() -> None:
    refusals = check_engine(
        version_info(engine="19.03.1"),
        {"DefaultRuntime": "nvidia"},
        uses_runc=True,
        trust_runtime=True,
        bridge_ipv6=True,
    )
    assert [r.component for r in refusals] == ["Docker Engine", "default runtime", "default bridge"]


def test_nvidia_toolkit_gate() -> None:
    assert (
        check_nvidia_toolkit("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: abc", trust_runtime=False)
        == []
    )
    (old,) = check_nvidia_toolkit("NVIDIA Container Toolkit CLI version 1.17.7", trust_runtime=False)
    assert "1.17.7" in str(old) and "CVE-2025-23266" in str(old)
    assert check_nvidia_toolkit("version 1.16.0", trust_runtime=True) == []
    (missing,) = check_nvidia_toolkit(None, trust_runtime=True)
    assert "not found" in str(missing)
