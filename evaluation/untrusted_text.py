"""Text a miner controls, made safe for where it goes: the judge's prompt, the database, a terminal.

Two views of the same rule, so nothing slips between them:

* :func:`for_judge` drops what a reader cannot see but a model can: C0/C1 control characters (newline
  and tab kept), lone surrogates, and Unicode *format* characters — bidirectional overrides and
  isolates, zero-width characters, the invisible "tag" block (U+E0000-U+E007F) that can spell hidden
  instructions. The visible text is unchanged.
* :func:`for_log` escapes the same characters instead of dropping them, and newlines too, so one value
  is one line: an operator's terminal never runs a miner's escape sequence, and no miner text can forge
  a log line. Escaped, the evidence stays readable (``\\x1b[2J``, ``\\u202e``).
"""

from __future__ import annotations

import unicodedata

_KEEP_IN_TEXT = frozenset("\n\t")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def for_judge(text: str) -> str:
    """``text`` without control, format and surrogate characters (newline and tab kept)."""
    if text.isascii() and text.isprintable():
        return text  # the common case, without a per-character lookup
    return "".join(ch for ch in text if ch in _KEEP_IN_TEXT or not _hidden(ch))


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def for_log(text: str, limit: int | None = None, *, keep_newlines: bool = False) -> str:
    """``text`` with every hidden character escaped, cut to ``limit`` characters first.

    One line unless ``keep_newlines`` (a multi-line report printed to a miner's own terminal).
    """
    if limit is not None:
        text = text[:limit]
    if text.isascii() and text.isprintable():
        return text
    kept = "\n" if keep_newlines else ""
    return "".join(_escape(ch) if _hidden(ch) and ch not in kept else ch for ch in text)
