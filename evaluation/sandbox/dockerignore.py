"""A ``.dockerignore`` reader and matcher of our own, with Docker's rules and in linear time.

Why not the docker SDK's: it turns ``**`` into backtracking regular expressions and runs them inside the
validator's process, so one crafted line pins a thread for hours (a thread cannot be killed), and a
non-UTF-8 file surfaced as our own failure. Here no regular expression is ever built from the miner's
text: every pattern becomes a small automaton, all patterns of a file are simulated together as one bit
vector (one Python integer), and each character of a path costs a handful of integer operations
whatever the patterns are. Work per path is O(len(path) x total pattern length / 64).

The rules are those of moby's ``dockerignore.ReadAll`` and ``patternmatcher`` (the legacy builder's
client side), read from their documentation and code:

* Lines are split on ``\\n`` (a trailing ``\\r`` dropped); a UTF-8 byte-order mark on the first line is
  dropped. A line whose first character is ``#`` is a comment; blank lines are skipped. Otherwise the
  line is trimmed, a leading ``!`` marks an exception, the rest is cleaned like Go's ``filepath.Clean``
  (``./`` and ``//`` collapse, ``a/..`` cancels, a trailing ``/`` goes) and one leading ``/`` is dropped.
* ``*`` matches any run of characters but ``/``, ``?`` one character but ``/``, ``[...]`` a class
  (``^`` negates, ``a-z`` ranges, ``\\`` escapes), ``\\c`` the character ``c``. ``**`` followed by ``/``
  (or in the middle of a pattern) matches zero or more whole directories; a trailing ``**`` matches
  anything. A pattern that starts with ``**`` and is literal after it is a plain suffix test (moby's
  ``suffixMatch``: ``**.py`` matches ``a.py`` and ``x/a.py``).
* A path is excluded when the last line matching the path or one of its parent directories is not an
  exception; so a pattern matching a directory excludes everything under it unless a later ``!`` line
  takes some of it back.

Deliberate differences, each refused with the line named rather than guessed at: a class containing
``*``, ``?`` or ``[`` and an escaped letter or digit (moby hands both to Go's regexp, where ``\\d`` is a
digit class and ``[[:alpha:]]`` a POSIX class, unlike ``filepath.Match``). ``^`` outside a class is a
literal (in moby's regexp it is an anchor that makes the line match nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evaluation.errors import RepoInvalid

IGNORE_FILE = ".dockerignore"
MAX_IGNORE_BYTES = 64 * 1024
MAX_IGNORE_LINES = 2_000
MAX_PATTERN_CHARS = 1_024
_BOM = "\ufeff"
# Go's unicode.IsSpace: what strings.TrimSpace strips (Python's str.strip also strips \x1c-\x1f).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# Token kinds of one pattern; each token is one state of the automaton (the state "before" it).
_LIT = 0  # one given character
_ONE = 1  # "?": one character but "/"
_CLASS = 2  # "[...]": one character of a class (may be "/", as in moby's regexp)
_STAR = 3  # "*": any run without "/"
_DIRS = 4  # "**/" or "**" inside: zero or more characters ending in "/", i.e. whole directories
_ALL = 5  # trailing "**" (or leading "**" of a suffix pattern): anything


@dataclass(frozen=True)
class CharClass:
    """A bracket expression: ``negated`` and inclusive ``(low, high)`` character ranges."""

    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def matches(self, char: str) -> bool:
        """Whether ``char`` belongs to the class."""
        return any(low <= char <= high for low, high in self.ranges) != self.negated


@dataclass(frozen=True)
class Token:
    """One element of a compiled pattern: a kind and, for literals and classes, what it matches."""

    kind: int
    char: str = ""
    char_class: CharClass | None = None


@dataclass(frozen=True)
class IgnorePattern:
    """One effective line of a ``.dockerignore``: its number, cleaned text and compiled tokens."""

    line: int
    text: str
    exclusion: bool
    tokens: tuple[Token, ...]


def go_trim_space(text: str) -> str:
    """``strings.TrimSpace``: strip what Go calls white space from both ends."""
    return text.strip(_GO_SPACE)


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a slash-separated path (lexical: the disk is never consulted)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def _refuse(line: int, why: str) -> RepoInvalid:
    return RepoInvalid(f"{IGNORE_FILE} line {line}: {why}")


def parse_ignore_file(data: bytes) -> list[IgnorePattern]:
    """The effective patterns of a ``.dockerignore``'s bytes, in file order.

    RepoInvalid (the miner's fault) names the line for: a file over :data:`MAX_IGNORE_BYTES`, more than
    :data:`MAX_IGNORE_LINES` lines, a line that is not UTF-8, a pattern over :data:`MAX_PATTERN_CHARS`
    characters, and a malformed or unsupported pattern.
    """
    if len(data) > MAX_IGNORE_BYTES:
        raise RepoInvalid(f"{IGNORE_FILE} is {len(data)} bytes, at most {MAX_IGNORE_BYTES} are accepted")
    raw_lines = data.split(b"\n")
    if data.endswith(b"\n"):
        raw_lines.pop()  # the newline ends the last line; it does not start another
    if len(raw_lines) > MAX_IGNORE_LINES:
        raise RepoInvalid(
            f"{IGNORE_FILE} has {len(raw_lines)} lines, at most {MAX_IGNORE_LINES} are accepted"
        )
    patterns: list[IgnorePattern] = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte {raw[exc.start]:#04x} at column {exc.start + 1}"
            raise _refuse(number, f"not UTF-8 ({where})") from exc
        pattern = _effective_line(text[1:] if number == 1 and text.startswith(_BOM) else text, number)
        if pattern is not None:
            patterns.append(pattern)
    return patterns


def _effective_line(text: str, number: int) -> IgnorePattern | None:
    """One line as moby reads it (ReadAll), then as its matcher takes it (New), or None for no pattern."""
    text = text.removesuffix("\r")
    if text.startswith("#"):
        return None
    text = go_trim_space(text)
    if not text:
        return None
    # ReadAll: clean what follows a "!" and drop one leading "/".
    exclusion = text.startswith("!")
    if exclusion:
        text = go_trim_space(text[1:])
    if text:
        text = go_clean(text)
        if len(text) > 1 and text.startswith("/"):
            text = text[1:]
    # New: trim and clean the whole line once more ("a /" becomes "a", "!/" becomes a lone "!").
    text = go_clean(go_trim_space(("!" if exclusion else "") + text))
    exclusion = text.startswith("!")
    if exclusion:
        text = text[1:]
        if not text:
            raise _refuse(number, 'a lone "!" (moby: illegal exclusion pattern)')
    if len(text) > MAX_PATTERN_CHARS:
        raise _refuse(number, f"pattern of {len(text)} characters, at most {MAX_PATTERN_CHARS} are accepted")
    return IgnorePattern(number, text, exclusion, compile_pattern(text, number))


def compile_pattern(pattern: str, line: int = 0) -> tuple[Token, ...]:
    """The tokens of one cleaned pattern; RepoInvalid (naming ``line``) when it is malformed."""
    if pattern.startswith("**") and not any(c in pattern[2:] for c in "*?[]\\"):
        # moby's suffixMatch: "**" then only literal text is a plain suffix test on the whole path.
        rest = pattern[2:]
        if rest.startswith("/"):
            return (Token(_DIRS), *(Token(_LIT, c) for c in rest[1:]))
        return (Token(_ALL), *(Token(_LIT, c) for c in rest))
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                tokens.append(Token(_ALL if i == n else _DIRS))
                continue
            tokens.append(Token(_STAR))
        elif char == "?":
            tokens.append(Token(_ONE))
        elif char == "\\":
            i += 1
            tokens.append(Token(_LIT, _escaped(pattern, i, line)))
        elif char == "[":
            char_class, i = _char_class(pattern, i + 1, line)
            tokens.append(Token(_CLASS, char_class=char_class))
            continue
        else:
            tokens.append(Token(_LIT, char))
        i += 1
    return _collapsed(tokens)


def _collapsed(tokens: list[Token]) -> tuple[Token, ...]:
    """The same language with no "**" form next to another: ``(.*/)?(.*/)?`` is ``(.*/)?`` and
    ``(.*/)?.*`` is ``.*``. Afterwards no two tokens that may match nothing follow each other except
    "**/" then "*" (a lone "*" is never followed by a "*" form), which keeps the matcher's closure to
    two fixed steps however many "**/" a line repeats."""
    out: list[Token] = []
    for token in tokens:
        if out and out[-1].kind == _DIRS and token.kind in (_DIRS, _ALL):
            out[-1] = token
        else:
            out.append(token)
    return tuple(out)


def _escaped(pattern: str, i: int, line: int) -> str:
    """The character escaped by the backslash before ``pattern[i]``."""
    if i >= len(pattern):
        raise _refuse(line, f"pattern {pattern!r} ends in a lone backslash")
    char = pattern[i]
    if char.isascii() and char.isalnum():
        raise _refuse(
            line, f"escape \\{char} in {pattern!r} is not supported (Docker reads it as a regexp class)"
        )
    return char


def _char_class(pattern: str, i: int, line: int) -> tuple[CharClass, int]:
    """Parse a class whose ``[`` was just before ``pattern[i]``; returns it and the index after ``]``."""
    n = len(pattern)
    negated = i < n and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i >= n:
            raise _refuse(line, f"pattern {pattern!r} has an unclosed '['")
        if pattern[i] == "]" and ranges:
            return CharClass(negated, tuple(ranges)), i + 1
        low, i = _class_char(pattern, i, line)
        high = low
        if i < n and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1, line)
            if high < low:
                raise _refuse(line, f"pattern {pattern!r} has the empty range {low}-{high}")
        ranges.append((low, high))


def _class_char(pattern: str, i: int, line: int) -> tuple[str, int]:
    """One character of a class at ``pattern[i]`` (maybe escaped); returns it and the next index."""
    if i >= len(pattern):
        raise _refuse(line, f"pattern {pattern!r} has an unclosed '['")
    char = pattern[i]
    if char == "\\":
        return _escaped(pattern, i + 1, line), i + 2
    if char in "-]":
        raise _refuse(line, f"pattern {pattern!r} has a misplaced {char!r} in a character class")
    if char in "*?[":
        raise _refuse(line, f"pattern {pattern!r}: {char!r} inside a character class is not supported")
    return char, i + 1


@dataclass(frozen=True)
class Cursor:
    """Where the matcher stands after a directory prefix ``d1/d2/.../dk/``.

    ``states``: the active automaton states of every pattern; ``matched``: the accept bits of the
    patterns that matched one of the prefixes ``d1``, ``d1/d2``, ... ``d1/.../dk`` (parents count).
    """

    states: int
    matched: int


class IgnoreMatcher:
    """Every pattern of one ``.dockerignore`` as one bit-parallel automaton (Thompson's construction).

    Each token is one state ("the tokens before it have matched"), "**/" two (its entry and its loop);
    after a pattern's last token comes its accept state. Bit i of a state vector is state i; later
    patterns sit at higher bits, so the highest accept bit set is the last matching line. One
    character costs a fixed number of integer operations (shift, and, or), whatever the patterns.
    ``steps`` counts characters consumed: tests check the work without a clock.
    """

    def __init__(self, patterns: Sequence[IgnorePattern]) -> None:
        """Compile ``patterns`` (in file order)."""
        self.patterns = tuple(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)
        self.steps = 0
        self._literals: dict[str, int] = {}
        self._classes: list[tuple[int, CharClass]] = []
        one = star = anything = entry = loop = accept = exception_accept = start = 0
        bit = 1
        for pattern in self.patterns:
            start |= bit
            for token in pattern.tokens:
                if token.kind == _LIT:
                    self._literals[token.char] = self._literals.get(token.char, 0) | bit
                elif token.kind == _ONE:
                    one |= bit
                elif token.kind == _CLASS:
                    assert token.char_class is not None
                    self._classes.append((bit, token.char_class))
                elif token.kind == _STAR:
                    star |= bit
                elif token.kind == _ALL:
                    anything |= bit
                else:  # "**/": an entry state that consumes nothing, then a loop left through "/"
                    entry |= bit
                    bit <<= 1
                    loop |= bit
                bit <<= 1
            accept |= bit
            if pattern.exclusion:
                exception_accept |= bit
            bit <<= 1
        self._one, self._loop, self._entry = one, loop, entry
        self._skippable = star | anything  # "*" and "**" may match nothing
        self._accept, self._exception_accept = accept, exception_accept
        self._stay_other = star | anything | loop  # self-loops on a character other than "/"
        self._stay_slash = anything | loop
        self._advance: dict[str, int] = {}
        self._root = Cursor(self._close(start), 0)

    def _close(self, states: int) -> int:
        """Add the states reachable without input.

        A "**/" entry reaches its loop and, skipping it, the state after it; that state may be a "*",
        which reaches the next. Nothing else follows without input (see ``_collapsed``).
        """
        entered = states & self._entry
        states |= (entered << 1) | (entered << 2)
        return states | ((states & self._skippable) << 1)

    def _advance_mask(self, char: str) -> int:
        """States whose token consumes ``char`` and moves on (cached per character)."""
        mask = self._advance.get(char)
        if mask is None:
            mask = self._literals.get(char, 0) | (self._loop if char == "/" else self._one)
            for bit, char_class in self._classes:
                if char_class.matches(char):
                    mask |= bit
            self._advance[char] = mask
        return mask

    def _consume(self, states: int, text: str) -> int:
        for char in text:
            if not states:
                return 0  # no pattern can match any longer: the rest is free
            self.steps += 1
            stay = self._stay_slash if char == "/" else self._stay_other
            states = self._close(((states & self._advance_mask(char)) << 1) | (states & stay))
        return states

    def root(self) -> Cursor:
        """The cursor of the context's top directory."""
        return self._root

    def entry(self, parent: Cursor, name: str) -> tuple[bool, Cursor]:
        """Whether ``name`` in the directory of ``parent`` is excluded, and the cursor inside it."""
        end = self._consume(parent.states, name)
        matched = parent.matched | (end & self._accept)
        excluded = bool(matched) and not (1 << (matched.bit_length() - 1)) & self._exception_accept
        return excluded, Cursor(self._consume(end, "/"), matched)

    def excluded(self, path: str) -> bool:
        """Whether the slash-separated relative ``path`` is excluded (parents' matches count)."""
        cursor, excluded = self._root, False
        for name in path.split("/"):
            excluded, cursor = self.entry(cursor, name)
        return excluded
