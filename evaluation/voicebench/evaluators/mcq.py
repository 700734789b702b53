"""Multiple-choice scoring (openbookqa, mmsu): find the one letter a response commits to.

VoiceBench's own extractor tries a list of phrase templates and, when none matches, scores a random
letter (unseeded), so the same answer can score differently between runs and a non-answer earns 25% on
average. This one is deterministic and never guesses: a response that commits to no option, or to more
than one, scores 0.

Rules, applied in tiers; the first tier that finds any valid letter decides, and if that tier finds two
or more different letters the response is ambiguous (score 0):

0. Contrasts, which name a rejected letter next to the chosen one: "not A but C", "C, not A",
   "C rather than A", "C instead of A" choose C.
1. Explicit statements: "the answer is B", "answer: B", "correct option would be (B)", "B is correct",
   "B is the right answer", "I choose B", "I'd go with option B", "It's B".
2. The response is just a letter ("B", "b.", "**(B)**") or opens with a label ("B. Evaporation",
   "B) ...", "(B) ...", "B: ...").
3. Mentions: "Option B", "choice B", "(B)" anywhere.
4. Option text: when no letter is found, the response counts as choosing an option if it quotes exactly
   one option's text (case, punctuation and a leading "a"/"an"/"the" ignored; when one quoted option's
   text is part of another quoted one's, only the longer counts).

Lowercase letters need care because "a" is a word: after a keyword, a lowercase letter (or "I", a
pronoun, which matters for ten-option mmsu questions) counts only when followed by the end of the text
or punctuation ("answer: b", "the answer is a." but not "the answer is a tadpole"); labels and
bare-letter responses accept either case. Only letters that are options of the
question count (parsed from the prompt's "A. ... B. ..." list; A-D when the prompt has none). Markdown
emphasis is ignored.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item

DEFAULT_LETTERS = "ABCD"

# "A. text" / "A) text" / "(A) text" at the start or after whitespace.
_OPTION_MARKER = re.compile(r"(?:^|(?<=\s))\(?([A-J])[.)]\s+")

# A letter as an answer: uppercase when not glued to a following word character; lowercase (and "I")
# only when followed by the end or punctuation, so the article in "the answer is a tadpole" and the
# pronoun in "the answer is I think B" are not letters.
_END = r"""(?=\s*(?:$|[.,;:!?)\]"']))"""
_LETTER = r"[(\[]?(?:(?P<upper>[A-HJ-Z])(?![\w])|(?P<lower>[a-zI])" + _END + ")"

_CONNECTOR = (
    r"(?:\s+(?i:is|would\s+be|should\s+be|must\s+be|will\s+be|has\s+to\s+be)\b\s*[:=\-]?|\s*[:=\-])\s*"
)
_EXPLICIT = [
    # "the answer is B", "correct option: (B)", "answer would be option B"; a connector is required so
    # that a bare mention ("option A is wrong") is not read as a statement.
    re.compile(
        r"(?i:\b(?:answer|option|choice|letter))"
        + _CONNECTOR
        + r"(?i:(?:option|choice|letter)\s+)?"
        + _LETTER
    ),
    # "B is correct", "B is the right answer"
    re.compile(r"(?:^|(?<=[\s(\[]))(?P<a>[A-Z])[)\]]?\s+is\s+(?:the\s+)?(?i:correct|right|best\s+answer)\b"),
    # "I choose B", "I'd go with option D", "It's B, evaporation."
    re.compile(
        r"(?i:\b(?:choose|chose|pick|select|go\s+with|going\s+with|it\s+is|it's|that\s+is|that's))\s+"
        r"(?i:(?:option|choice)\s+)?" + _LETTER
    ),
]
# Contrasts come first: every other tier would see both letters and call the response ambiguous.
_OPT = r"(?i:(?:option|choice|answer)\s+)?[(\[]?"
_CONTRAST = [
    re.compile(r"(?i:\bnot\s+)" + _OPT + r"[A-J][)\]]?\s*,?\s*(?i:but)\s+" + _OPT + r"(?P<a>[A-J])(?![\w])"),
    re.compile(
        r"(?:^|(?<=[\s(\[]))"
        + _OPT
        + r"(?P<a>[A-J])[)\]]?\s*,?\s*(?i:not|rather\s+than|instead\s+of)\s+"
        + _OPT
        + r"[A-J](?![\w])"
    ),
]
_LABEL = [
    # The whole response is one letter: "B", "b.", "(B)".
    re.compile(r"^\W*(?P<a>[A-Za-z])\W*$"),
    # The response opens with a label: "(B) ...", "B. ...", "B) ...", "B: ...", "b) ...".
    re.compile(r"^\s*(?:\((?P<a>[A-Za-z])\)|(?P<b>[A-Z])[.):]|(?P<c>[a-z])\))(?=\s|$)"),
]
_MENTION = [
    re.compile(r"(?i:\b(?:option|choice))\s+" + _LETTER),
    re.compile(r"[(\[](?P<a>[A-Za-z])[)\]]"),
]
_MARKDOWN = re.compile(r"[*_`#]+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_LEADING_ARTICLE = re.compile(r"^(?:a|an|the) ")


def parse_options(prompt: str) -> dict[str, str]:
    """Return the question's options as ``{letter: text}``, from an "A. ... B. ... C. ..." list.

    The list is the longest run of markers A, B, C, ... in order (later runs win ties, since a question
    may itself contain something like "vitamin C. "). Returns ``{}`` when there are fewer than two.
    """
    markers = list(_OPTION_MARKER.finditer(prompt))
    best: list[re.Match[str]] = []
    for start, marker in enumerate(markers):
        if marker.group(1) != "A":
            continue
        chain = [marker]
        for following in markers[start + 1 :]:
            if following.group(1) == chr(ord(chain[-1].group(1)) + 1):
                chain.append(following)
        if len(chain) >= len(best):
            best = chain
    if len(best) < 2:
        return {}
    options: dict[str, str] = {}
    for index, marker in enumerate(best):
        end = best[index + 1].start() if index + 1 < len(best) else len(prompt)
        options[marker.group(1)] = prompt[marker.end() : end].strip()
    return options


def extract_choice(response: str, options: dict[str, str] | None = None) -> str | None:
    """The single option letter ``response`` commits to, or None (no answer, or ambiguous).

    ``options`` maps letters to option texts (see :func:`parse_options`); None or empty means A-D with
    no texts. See the module docstring for the rules.
    """
    valid = set(options) if options else set(DEFAULT_LETTERS)
    text = _MARKDOWN.sub("", response).strip()
    for tier in (_CONTRAST, _EXPLICIT, _LABEL, _MENTION):
        found = {letter for pattern in tier for letter in _letters(pattern, text) if letter in valid}
        if found:
            return found.pop() if len(found) == 1 else None
    return _choice_by_text(text, options or {})


def _letters(pattern: re.Pattern[str], text: str) -> list[str]:
    letters = []
    for match in pattern.finditer(text):
        letter = next((value for value in match.groupdict().values() if value), None)
        if letter:
            letters.append(letter.upper())
    return letters


def _normalize(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _choice_by_text(response: str, options: dict[str, str]) -> str | None:
    """The option whose text alone the response quotes, or None."""
    haystack = f" {_normalize(response)} "
    quoted: dict[str, str] = {}
    for letter, option_text in options.items():
        needle = _LEADING_ARTICLE.sub("", _normalize(option_text))
        if needle and f" {needle} " in haystack:
            quoted[letter] = needle
    # "heat" inside "heat and light": the response quoted the longer option, not both.
    kept = [
        letter
        for letter, needle in quoted.items()
        if not any(other != letter and f" {needle} " in f" {text} " for other, text in quoted.items())
    ]
    return kept[0] if len(kept) == 1 else None


class MultipleChoiceEvaluator:
    """Scores 1 when the response commits to exactly the reference letter, else 0. Deterministic."""

    name = "mcq"

    def score(self, item: Item, response: str) -> float:
        """Score ``response`` against ``item.reference`` (a letter); raises ValueError without one."""
        reference = (item.reference or "").strip().strip("().").upper()
        if len(reference) != 1 or not reference.isalpha():
            raise ValueError(f"{item.item_id}: reference {item.reference!r} is not an option letter")
        choice = extract_choice(response, parse_options(item.prompt))
        return 1.0 if choice == reference else 0.0
