from __future__ import annotations

import pytest

from validator.version import package_version, version_key


@pytest.mark.parametrize(
    ("text", "key"), [("0.1.0", 100), ("1.2.3", 10203), ("2.0", 20000), ("1.4.0+dev", 10400)]
)
def test_version_key_is_monotonic_integer(text: str, key: int) -> None:
    assert version_key(text) == key


def test_installed_version_gives_a_key() -> None:
    assert version_key() == version_key(package_version()) > 0


def test_unrepresentable_version_is_refused() -> None:
    with pytest.raises(ValueError, match="below 100"):
        version_key("1.100.0")
