from __future__ import annotations

from validator.table import render_table


def test_columns_align_and_values_render() -> None:
    text = render_table(("uid", "score"), [(1, 12.345), (10, None)])
    lines = text.splitlines()
    assert lines[0] == "uid  score"
    assert lines[2] == "1    12.35"
    assert lines[3] == "10   -"
