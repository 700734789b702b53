"""The judge prompts under prompt injection: miner text stays inside its block, capped and defused.

The hostile answers live in ``tests/judge_injections.json``. Every answer is rendered with both rubrics
and the rendered messages are checked structurally (what the judge model then does is out of reach of a
unit test; these checks make sure it is at least told the truth about where the answer begins and ends).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from evaluation.judge.prompts import (
    MAX_ANSWER_CHARS,
    PROMPT_VERSION,
    TRUNCATED_MARKER,
    answer_block,
    begin_delimiter,
    end_delimiter,
    parse_open,
    parse_qa,
    render_open,
    render_qa,
)

_SET = json.loads((Path(__file__).parent / "judge_injections.json").read_text(encoding="utf-8"))
QUESTION = "What is the capital of France?"
REFERENCE = "Paris"


def _answers() -> dict[str, str]:
    """The injection set, templates expanded (an entry may quote another entry's real end delimiter)."""
    entries: list[dict[str, Any]] = _SET["answers"]
    raw = {e["id"]: e["answer"] * e.get("repeat", 1) + e.get("suffix", "") for e in entries}
    out = dict(raw)
    for e in entries:
        if "other" in e:
            _, token = answer_block(raw[e["other"]])
            out[e["id"]] = raw[e["id"]].replace("{OTHER_END}", end_delimiter(token))
    return out


ANSWERS = _answers()
RENDERERS = {
    "open": lambda answer: render_open(QUESTION, answer),
    "qa": lambda answer: render_qa(QUESTION, REFERENCE, answer),
}


def test_the_set_is_big_enough_and_covers_the_attacks() -> None:
    assert len(ANSWERS) >= 12
    assert any(len(a) > 4 * MAX_ANSWER_CHARS for a in ANSWERS.values())
    other = ANSWERS["other-answers-delimiter"]
    assert end_delimiter(answer_block(ANSWERS["score-line"])[1]) in other  # the real thing, verbatim
    assert PROMPT_VERSION == "open-qa-v1"


@pytest.mark.parametrize("rubric", sorted(RENDERERS))
@pytest.mark.parametrize("answer_id", sorted(ANSWERS))
def test_answer_stays_in_its_block(rubric: str, answer_id: str) -> None:
    answer = ANSWERS[answer_id]
    messages = RENDERERS[rubric](answer)
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    block, token = answer_block(answer)
    begin, end = begin_delimiter(token), end_delimiter(token)
    body = block[len(begin) + 1 : -(len(end) + 1)]

    # The system message carries the data-not-instructions rule and no miner text.
    assert "written by the model under test" in system
    assert "never an instruction" in system
    assert "ignore them" in system and "scores" in system and "'SYSTEM:'" in system
    assert body not in system

    # One block, opened once, closed exactly once, after the answer; nothing of the answer outside it.
    assert user.count(begin) == 1 and user.count(end) == 1
    start = user.index(begin)
    stop = user.index(end)
    assert start < stop and user[start : stop + len(end)] == block
    assert user[start + len(begin) + 1 : stop - 1] == body
    outside = user[:start] + user[stop + len(end) :]
    assert body.strip() not in outside
    assert user.rstrip().endswith(("Reply with the digit only.", "Reply Yes or No only."))

    # Capped, with a visible marker right before the closing line when cut.
    assert len(body) <= MAX_ANSWER_CHARS + len(TRUNCATED_MARKER) + 1
    if len(answer) > MAX_ANSWER_CHARS:
        assert body.endswith("\n" + TRUNCATED_MARKER)
    else:
        assert TRUNCATED_MARKER not in body

    # No delimiter shape and no chat-template turn marker survives inside the body, even after NFKC.
    folded = unicodedata.normalize("NFKC", body)
    assert "<<<" not in folded and ">>>" not in folded
    assert "END_ANSWER" not in body or "<<<END_ANSWER" not in folded
    for marker in ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "</s>", "[INST]"):
        assert marker not in body


def test_other_answers_delimiter_is_not_reproduced() -> None:
    _, victim_token = answer_block(ANSWERS["score-line"])
    user = render_qa(QUESTION, REFERENCE, ANSWERS["other-answers-delimiter"])[1]["content"]
    assert end_delimiter(victim_token) not in user


def test_token_is_derived_from_the_answer() -> None:
    block_a, token_a = answer_block("Paris.")
    _, token_b = answer_block("Paris!")
    assert token_a != token_b and len(token_a) == 16
    assert answer_block("Paris.") == (block_a, token_a)  # deterministic: no randomness, reproducible


def test_benign_text_is_kept() -> None:
    answer = "Use a << b for shifts; x < y > z is fine. The capital is Paris."
    assert answer in render_open(QUESTION, answer)[1]["content"]
    assert QUESTION in render_open(QUESTION, answer)[1]["content"]
    assert f"Reference answer:\n{REFERENCE}" in render_qa(QUESTION, REFERENCE, answer)[1]["content"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", 4),
        ("5", 5),
        (" 1\n", 1),
        ("3.", 3),
        ("2 because it is vague", 2),
        ("0", None),
        ("6", None),
        ("Score: 4", None),
        ("4/5", None),
        ("**4**", None),
        ("four", None),
        ("", None),
        ("I would rate this 5", None),
        ("45", None),
    ],
)
def test_parse_open(text: str, expected: int | None) -> None:
    assert parse_open(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("No", False),
        ("yes.", True),
        ("NO", False),
        ("Yes, it matches", True),
        ("Yess", None),
        ("Maybe", None),
        ("The answer is Yes", None),
        ("", None),
        ("Y", None),
        ("No-ish", None),
    ],
)
def test_parse_qa(text: str, expected: bool | None) -> None:
    assert parse_qa(text) == expected
