"""BBH scoring (VoiceBench's four spoken BBH tasks): find the one answer a response commits to.

VoiceBench's extractor is a long list of phrase templates per task with a random answer as fallback
(unseeded), and some templates invert meaning. This one is deterministic, never guesses, and reads
negation: a response that commits to no answer, or to both, scores 0.

References are "yes"/"no" (sports_understanding, navigate, web_of_lies) or "(A)"/"(B)" (hyperbaton;
"A"/"B" accepted too). The task is named inside the item's original id (``extra["id"]``, e.g.
"navigate_3"); the item id is the fallback.

Yes/no tasks, in tiers; the first tier with a finding decides, and two polarities in it score 0:

1. Explicit answers: "the answer is no", "final answer: implausible", "answer: yes".
2. A leading yes/no: "No, the sentence is implausible." ("Yes and no ..." is ambiguous).
3. The conclusion: the last sentence that states the task's predicate, read with negation
   ("not plausible", "implausible", "doesn't return to the starting point", "three steps from the start",
   "Shenna is lying", "Shenna does not tell the truth"). For web_of_lies only statements about the person
   the question asks about count, and "X says ..." is a claim, not a statement about X.

Hyperbaton uses the multiple-choice extractor on options A and B, plus "the first/second option".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from evaluation.voicebench.evaluators.mcq import extract_choice, parse_options

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item

TASKS = ("sports_understanding", "hyperbaton", "navigate", "web_of_lies")

_MARKDOWN = re.compile(r"[*_`#]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:]|\b(?:but|so|because|since|therefore|thus|hence|however)\b", re.IGNORECASE)
# Negation cues read within a few words before a predicate term.
_NEGATION = re.compile(r"\b(?:not|never|no\s+longer|cannot|can't|fails?\s+to|\w+n't|neither|nor)\b", re.I)
_NEGATION_WINDOW = 5

_EXPLICIT = re.compile(
    r"\b(?:answer|conclusion|verdict)\b\s*(?:is|would\s+be|will\s+be|should\s+be|must\s+be)?\s*[:=\-]?\s*"
    r"(?P<word>yes|no|not\s+plausible|implausible|plausible|true|false)\b",
    re.IGNORECASE,
)
_EXPLICIT_POLARITY = {"yes": True, "true": True, "plausible": True}
_LEADING = re.compile(r"^\W*(?P<word>yes|no)\b", re.IGNORECASE)
_YES_NO_WORD = re.compile(r"\b(yes|no)\b(?!\s+(?:matter|longer|one|doubt))", re.IGNORECASE)

# (pattern, polarity) per task; a positive match overlapping a negative one is dropped ("implausible"
# contains no "\bplausible", but "away from the start" contains "start").
_SPORTS_TERMS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (
        re.compile(r"\b(?:implausible|unlikely|impossible|unrealistic|unreasonable|nonsensical)\b", re.I),
        False,
    ),
    (re.compile(r"\bdoes(?:n't|\s+not)\s+make\s+sense\b", re.I), False),
    (re.compile(r"\b(?:plausible|likely|possible|realistic|reasonable)\b", re.I), True),
    (re.compile(r"\bmakes\s+sense\b", re.I), True),
)
_NAVIGATE_TERMS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (
        re.compile(
            r"\b(?:(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|\w+)\s+steps?\s+)?"
            r"(?:away\s+from|short\s+of)\s+(?:the|our|your|my|its)\s+(?:start\w*|origin\w*|initial)"
            r"(?:\s+(?:point|position|location|spot))?",
            re.I,
        ),
        False,
    ),
    (
        re.compile(
            r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)\s+steps?\s+(?:\w+\s+)?from\s+"
            r"(?:the|our|your|my|its)\s+(?:start\w*|origin\w*|initial)(?:\s+(?:point|position|location))?",
            re.I,
        ),
        False,
    ),
    (
        re.compile(
            r"\b(?:start(?:ing)?\s+(?:point|position|location|spot|place)|origin(?:al\s+(?:point|position|location))?"
            r"|initial\s+(?:point|position|location)|where\s+(?:we|you|they|i|he|she|it)\s+(?:started|began))\b",
            re.I,
        ),
        True,
    ),
)
_TRUTH_TERMS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\b(?:lies|lied|lying|liar|lie|dishonest|untruthful|false)\b", re.I), False),
    (re.compile(r"\b(?:truth|truthful|honest|true)\b", re.I), True),
)
_ASKED_PERSON = re.compile(r"\bdoes\s+(?P<name>[A-Z][a-z]+)\s+tell\s+the\s+truth", re.I)
_SAYS = re.compile(r"^\s*(?:says|said|claims|claimed|states|stated|tells\s+us|thinks|believes)\b", re.I)


def task_of(item: Item) -> str:
    """The BBH task of ``item``, read from ``extra["id"]`` (else the item id); ValueError if none."""
    for source in (str(item.extra.get("id") or ""), item.item_id):
        for task in TASKS:
            if task in source:
                return task
    raise ValueError(f"{item.item_id}: no BBH task in id {item.extra.get('id')!r}")


def _polarities(text: str, terms: tuple[tuple[re.Pattern[str], bool], ...]) -> set[bool]:
    """Polarities of the predicate terms in one clause; a negation cue shortly before a term flips it."""
    taken: list[tuple[int, int]] = []
    found: set[bool] = set()
    for pattern, polarity in terms:
        for match in pattern.finditer(text):
            if any(start < match.end() and match.start() < end for start, end in taken):
                continue
            taken.append(match.span())
            before = text[: match.start()].split()[-_NEGATION_WINDOW:]
            negated = len(_NEGATION.findall(" ".join(before))) % 2 == 1
            found.add(polarity != negated)
    return found


def _clauses(sentence: str) -> list[str]:
    return [clause for clause in _CLAUSE_END.split(sentence) if clause.strip()]


def _conclusion(text: str, terms: tuple[tuple[re.Pattern[str], bool], ...]) -> bool | None:
    """The polarity of the last sentence stating the predicate; None if none or both polarities."""
    for sentence in reversed(_SENTENCE_END.split(text)):
        found: set[bool] = set()
        for clause in _clauses(sentence):
            found |= _polarities(clause, terms)
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def _about_person(text: str, name: str) -> bool | None:
    """Whether the last statement about ``name`` says they tell the truth; None if none or unclear."""
    pattern = re.compile(rf"\b{re.escape(name)}\b(?P<rest>[^.!?\n,;:]*)", re.IGNORECASE)
    verdict: bool | None = None
    for match in pattern.finditer(text):
        rest = match.group("rest")
        if _SAYS.match(rest):
            continue  # "Shenna says Jerry lies" is about Jerry
        rest = re.split(r"\b(?:says|said|claims|because|since|as|so)\b", rest, maxsplit=1, flags=re.I)[0]
        found = _polarities(rest, _TRUTH_TERMS)
        if len(found) == 1:
            verdict = found.pop()
        elif found:
            verdict = None
    return verdict


def extract_yes_no(response: str, task: str, prompt: str = "") -> bool | None:
    """True for yes, False for no, None when the response commits to neither or to both."""
    text = _MARKDOWN.sub("", response).strip()
    explicit = {_EXPLICIT_POLARITY.get(m.group("word").lower(), False) for m in _EXPLICIT.finditer(text)}
    if explicit:
        return explicit.pop() if len(explicit) == 1 else None
    if _LEADING.match(text):
        first = _SENTENCE_END.split(text, maxsplit=1)[0]
        words = {word.lower() for word in _YES_NO_WORD.findall(first)}
        return (words.pop() == "yes") if len(words) == 1 else None
    if task == "sports_understanding":
        return _conclusion(text, _SPORTS_TERMS)
    if task == "navigate":
        return _conclusion(text, _NAVIGATE_TERMS)
    if task == "web_of_lies":
        asked = _ASKED_PERSON.search(prompt)
        if asked:
            return _about_person(text, asked.group("name"))
        return _conclusion(text, _TRUTH_TERMS)
    raise ValueError(f"{task!r} is not a yes/no BBH task")


_ORDINAL = re.compile(r"\b(?P<which>first|second)\s+(?:option|sentence|one|choice)\b", re.IGNORECASE)


def extract_hyperbaton(response: str, prompt: str = "") -> str | None:
    """ "A" or "B" for the sentence the response picks, or None (no answer, or both)."""
    parsed = parse_options(prompt)
    options = {letter: parsed.get(letter, "") for letter in "AB"}
    choice = extract_choice(response, options)
    if choice is not None:
        return choice
    ordinals = {m.group("which").lower() for m in _ORDINAL.finditer(response)}
    if len(ordinals) == 1:
        return "A" if ordinals.pop() == "first" else "B"
    return None


class BBHEvaluator:
    """Scores 1 when the response commits to exactly the reference answer, else 0. Deterministic."""

    name = "bbh"

    def score(self, item: Item, response: str) -> float:
        """Score ``response`` against ``item.reference``; raises ValueError on an unknown reference."""
        task = task_of(item)
        reference = (item.reference or "").strip().lower()
        if task == "hyperbaton":
            letter = reference.strip("(). ").upper()
            if letter not in ("A", "B"):
                raise ValueError(f"{item.item_id}: hyperbaton reference {item.reference!r} is not (A)/(B)")
            return 1.0 if extract_hyperbaton(response, item.prompt) == letter else 0.0
        if reference not in ("yes", "no"):
            raise ValueError(f"{item.item_id}: {task} reference {item.reference!r} is not yes/no")
        answer = extract_yes_no(response, task, item.prompt)
        return 1.0 if answer is not None and answer == (reference == "yes") else 0.0
