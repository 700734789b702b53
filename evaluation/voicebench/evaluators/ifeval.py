"""IFEval scoring: Google's 25 verifiable instructions, checked strictly and deterministically.

Written here rather than taken from a library: ``if-verifiable`` 0.1.2 (Apache-2.0) ports Google's
checkers but needs nltk with its punkt data (a download at run time), langdetect (unseeded, so the
language checks can flip between runs), syllapy, emoji and ``datasets``; ``lm-eval[ifeval]`` is heavier
still. The checkers below follow Google's definitions (``instruction_id`` and ``kwargs`` names as in the
dataset) with these documented differences:

* Sentences are split by a regex (end punctuation followed by space or end, common abbreviations kept)
  instead of nltk's punkt model; words are ``\\w+`` runs, as Google's word counter does.
* ``language:response_language`` (and the English check of ``change_case:english_*``) uses
  :func:`detect_language`: the writing system decides for non-Latin scripts, and counts of frequent
  function words decide between Latin-script languages. It is exact for scripts, good for paragraphs of
  the common Latin-script languages, and unreliable for a few words of text; it never varies between runs.
* An unknown instruction id raises ValueError rather than passing silently.

Item score: VoiceBench reports IFEval as the mean of prompt-level strict accuracy and instruction-level
strict accuracy; per item that is ``(all followed ? 1 : 0 + fraction followed) / 2``, so the mean over
items equals VoiceBench's figure. :func:`followed` exposes the per-instruction results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item

Checker = Callable[[str, Mapping[str, Any], str], bool]

_WORD = re.compile(r"\w+")
_ABBREVIATIONS = re.compile(r"\b(?:mr|mrs|ms|dr|prof|sr|jr|st|vs|etc|e\.g|i\.e|u\.s|no)\.$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]+[\"')\]]*(?=\s|$)")


def _compare(count: int, relation: str, target: int) -> bool:
    """Google's two relations: "less than" is strict, "at least" inclusive."""
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"unknown relation {relation!r}")


def count_sentences(text: str) -> int:
    """Sentences in ``text``: runs ending in . ! ? (abbreviations such as "Dr." do not end one)."""
    count, start = 0, 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.end()]
        if _ABBREVIATIONS.search(piece.rstrip("\"')]")):
            continue
        if _WORD.search(piece):
            count += 1
        start = match.end()
    if _WORD.search(text[start:]):
        count += 1  # a last sentence without end punctuation
    return count


# --- language detection ----------------------------------------------------------------------------

_SCRIPTS: tuple[tuple[str, str], ...] = (
    ("\u3040-\u30ff", "ja"),  # kana first: Japanese text also has Han characters
    ("\uac00-\ud7af\u1100-\u11ff", "ko"),
    ("\u4e00-\u9fff", "zh"),
    ("\u0e00-\u0e7f", "th"),
    ("\u0370-\u03ff", "el"),
    ("\u0590-\u05ff", "he"),
    ("\u0980-\u09ff", "bn"),
    ("\u0b80-\u0bff", "ta"),
    ("\u0c00-\u0c7f", "te"),
    ("\u0a80-\u0aff", "gu"),
    ("\u0c80-\u0cff", "kn"),
    ("\u0d00-\u0d7f", "ml"),
    ("\u0a00-\u0a7f", "pa"),
    ("\u0900-\u097f", "hi"),
    ("\u0600-\u06ff", "ar"),
    ("\u0400-\u04ff", "ru"),
)
_STOPWORDS: Mapping[str, frozenset[str]] = {
    "en": frozenset("the and is are of to in that it you for with this was on be not have as they".split()),
    "es": frozenset("el la los las de que y en es un una por con para no se del al lo como".split()),
    "pt": frozenset("o os as de que e em um uma por com para não se do da dos das ao é".split()),
    "fr": frozenset("le la les de des et est un une pour que qui dans en du au ne pas sur avec".split()),
    "de": frozenset("der die das und ist nicht ein eine zu mit den von auf für sich dem des auch".split()),
    "it": frozenset("il lo la gli le di che e è un una per con non del della sono anche nel".split()),
    "nl": frozenset("de het een en van is dat niet op te zijn voor met die ook als maar".split()),
    "sv": frozenset("och att det är som en på för med inte av till den har jag om".split()),
    "fi": frozenset("ja on ei se että oli hän mutta kun ovat tämä ole myös sen niin".split()),
    "tr": frozenset("ve bir bu da de için ile çok ne olarak daha gibi ama değil var".split()),
    "pl": frozenset("i w nie się na jest to że z do jak jego tak ale co przez".split()),
    "ro": frozenset("și în este de la cu un o nu pe care să din mai pentru".split()),
    "vi": frozenset("và là của có không được những trong một các cho người với này".split()),
    "id": frozenset("dan yang di ini itu dengan untuk tidak dari dalam akan pada adalah ke".split()),
    "sw": frozenset("na ya wa kwa ni katika la za kuwa hii cha yake lakini au".split()),
    "tl": frozenset("ang ng mga sa na at ay si hindi ito ko mo para".split()),
}


def detect_language(text: str) -> str | None:
    """An ISO 639-1 code for ``text``'s main language, or None when no evidence; deterministic.

    Non-Latin scripts decide by character counts (Cyrillic: Ukrainian or Bulgarian by their letters,
    else Russian; Arabic script: Persian or Urdu by their letters, else Arabic; Devanagari: Marathi or
    Nepali by frequent words, else Hindi). Latin script decides by function-word counts, ties broken by
    the fixed order of the table above.
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    best_script, best_count = None, 0
    for ranges, code in _SCRIPTS:
        count = len(re.findall(f"[{ranges}]", text))
        if count > best_count:
            best_script, best_count = code, count
    latin = sum(
        1 for ch in letters if ch.isascii() or "\u00c0" <= ch <= "\u024f" or "\u1e00" <= ch <= "\u1eff"
    )
    if best_script is not None and best_count >= latin:
        return _refine_script(best_script, text)
    words = [word.lower() for word in _WORD.findall(text)]
    scores = {code: sum(word in stops for word in words) for code, stops in _STOPWORDS.items()}
    code = max(scores, key=lambda key: scores[key])  # max keeps the first of equal scores
    return code if scores[code] > 0 else None


def _refine_script(code: str, text: str) -> str:
    if code == "ru":
        if re.search("[іїєґІЇЄҐ]", text):
            return "uk"
        if not re.search("[ыэЫЭ]", text) and re.search("[ъЪ]", text):
            return "bg"
    if code == "ar":
        if re.search("[ٹڈڑےں]", text):
            return "ur"
        if re.search("[پچژگ]", text) or "ی" in text:
            return "fa"
    if code == "hi":
        words = set(text.split())
        if words & {"आहे", "आणि", "नाही", "आहेत"}:
            return "mr"
        if words & {"छ", "हो", "छन्", "गर्न"}:
            return "ne"
    return code


# --- the checkers -----------------------------------------------------------------------------------


def _existence(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return all(re.search(re.escape(word), response, re.IGNORECASE) for word in kw["keywords"])


def _frequency(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    count = len(re.findall(re.escape(kw["keyword"]), response, re.IGNORECASE))
    return _compare(count, kw["relation"], int(kw["frequency"]))


def _forbidden(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return not any(
        re.search(r"\b" + re.escape(word) + r"\b", response, re.IGNORECASE) for word in kw["forbidden_words"]
    )


def _letter_frequency(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    count = response.lower().count(str(kw["letter"]).lower())
    return _compare(count, kw["let_relation"], int(kw["let_frequency"]))


def _response_language(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return detect_language(response) == kw["language"]


def _number_sentences(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return _compare(count_sentences(response), kw["relation"], int(kw["num_sentences"]))


def _number_paragraphs(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    # Paragraphs are separated by the markdown divider "***"; an empty paragraph in between fails.
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for index, part in enumerate(parts):
        if not part.strip():
            if index in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == int(kw["num_paragraphs"])


def _number_words(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return _compare(len(_WORD.findall(response)), kw["relation"], int(kw["num_words"]))


def _nth_paragraph_first_word(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    # Paragraphs here are separated by blank lines ("\n\n"), as in Google's checker.
    paragraphs = [p for p in re.split(r"\n\n", response) if p.strip()]
    nth = int(kw["nth_paragraph"])
    if len(paragraphs) != int(kw["num_paragraphs"]) or not 1 <= nth <= len(paragraphs):
        return False
    words = paragraphs[nth - 1].split()
    first = words[0].lstrip("\"'*#([").rstrip(".,!?;:\"'*)]").lower() if words else ""
    return first == str(kw["first_word"]).lower()


def _placeholders(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= int(kw["num_placeholders"])


def _postscript(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    marker = str(kw["postscript_marker"]).strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.search(pattern, response.lower(), re.MULTILINE))


def _bullet_lists(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, re.MULTILINE)
    return len(stars) + len(dashes) == int(kw["num_bullets"])


def _constrained(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return any(
        option in response.strip()
        for option in ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    )


def _highlighted(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
    double = [
        h
        for h in re.findall(r"\*\*[^\n\*]*\*\*", response)
        if h.removeprefix("**").removesuffix("**").strip()
    ]
    return len(single) + len(double) >= int(kw["num_highlights"])


def _sections(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    splitter = str(kw["section_spliter"]).strip()
    parts = re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", response)
    return len(parts) - 1 >= int(kw["num_sections"])


def _json_format(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _title(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return any(title.strip("<>").strip() for title in re.findall(r"<<[^\n]+>>", response))


def _two_responses(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    # Exactly two non-empty responses separated by six asterisks; an empty one in between fails.
    parts = response.split("******")
    kept = []
    for index, part in enumerate(parts):
        if part.strip():
            kept.append(part.strip())
        elif 0 < index < len(parts) - 1:
            return False
    return len(kept) == 2 and kept[0] != kept[1]


def _repeat_prompt(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    to_repeat = str(kw.get("prompt_to_repeat") or prompt)
    return response.strip().lower().startswith(to_repeat.strip().lower())


def _end_checker(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return response.strip().strip('"').lower().endswith(str(kw["end_phrase"]).strip().lower())


def _quotation(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _capital_words(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    count = sum(1 for word in _WORD.findall(response) if word.isupper())
    return _compare(count, kw["capital_relation"], int(kw["capital_frequency"]))


def _english_capital(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return response.isupper() and detect_language(response) == "en"


def _english_lowercase(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return response.islower() and detect_language(response) == "en"


def _no_comma(response: str, kw: Mapping[str, Any], prompt: str) -> bool:
    return "," not in response


CHECKERS: Mapping[str, Checker] = {
    "keywords:existence": _existence,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letter_frequency,
    "language:response_language": _response_language,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "length_constraints:number_words": _number_words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _bullet_lists,
    "detectable_format:constrained_response": _constrained,
    "detectable_format:number_highlighted_sections": _highlighted,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json_format,
    "detectable_format:title": _title,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeat_prompt,
    "startend:end_checker": _end_checker,
    "startend:quotation": _quotation,
    "change_case:capital_word_frequency": _capital_words,
    "change_case:english_capital": _english_capital,
    "change_case:english_lowercase": _english_lowercase,
    "punctuation:no_comma": _no_comma,
}


def check(
    instruction_id: str, response: str, kwargs: Mapping[str, Any] | None = None, prompt: str = ""
) -> bool:
    """Whether ``response`` follows one instruction; raises ValueError for an unknown id."""
    try:
        checker = CHECKERS[instruction_id]
    except KeyError:
        raise ValueError(f"unknown IFEval instruction {instruction_id!r}") from None
    return checker(response, kwargs or {}, prompt)


def followed(item: Item, response: str) -> list[bool]:
    """Whether each instruction of ``item`` (``extra["instruction_id_list"]``, ``extra["kwargs"]``) holds."""
    ids: Sequence[str] = item.extra.get("instruction_id_list") or ()
    kwargs_list: Sequence[Mapping[str, Any] | None] = item.extra.get("kwargs") or ()
    if not ids:
        raise ValueError(f"{item.item_id}: no instruction_id_list")
    results = []
    for index, instruction_id in enumerate(ids):
        kwargs = kwargs_list[index] if index < len(kwargs_list) else None
        results.append(check(instruction_id, response, kwargs or {}, item.prompt))
    return results


class IFEvalEvaluator:
    """Mean of prompt-level strict (all followed) and instruction-level strict (fraction followed)."""

    name = "ifeval"

    def score(self, item: Item, response: str) -> float:
        """Score ``response``; raises ValueError when the item lists no or unknown instructions."""
        results = followed(item, response)
        return (float(all(results)) + sum(results) / len(results)) / 2
