"""The .dockerignore matcher: Docker's rules (against a slow reference), linear work, clear refusals."""

from __future__ import annotations

import posixpath
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.errors import RepoInvalid, SubmissionRejected
from evaluation.sandbox.dockerignore import (
    MAX_IGNORE_BYTES,
    MAX_IGNORE_LINES,
    MAX_PATTERN_CHARS,
    IgnoreMatcher,
    go_clean,
    parse_ignore_file,
)

# ------------------------------------------------------------------ the reference: moby's code, ported


def _ref_clean(path: str) -> str:
    """Go's filepath.Clean via posixpath (which keeps a leading "//"; Go does not)."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _ref_read_all(data: bytes) -> list[str]:
    """dockerignore.ReadAll: comments, blank lines, "!" and a leading "/" handled line by line."""
    out = []
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for number, raw in enumerate(lines):
        if number == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        line = raw.removesuffix(b"\r").decode()
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = _ref_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        out.append("!" + line if invert else line)
    return out


def _ref_compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """patternmatcher's Pattern.compile: the match type and, for regexp matches, the expression."""
    regex, kind, i = "^", "exact", 0
    n, token = len(pattern), 0
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i == n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex, kind = regex + ".*", "regexp"
                else:
                    regex, kind = regex + "(.*/)?", "regexp"
                if token == 0:
                    kind = "suffix"
            else:
                regex, kind = regex + "[^/]*", "regexp"
        elif char == "?":
            regex, kind = regex + "[^/]", "regexp"
        elif char in ".+()|{}$":
            regex += "\\" + char
        elif char == "\\":
            if i < n:
                regex, kind = regex + "\\" + pattern[i], "regexp"
                i += 1
            else:
                regex += "\\\\"
        elif char in "[]":
            regex, kind = regex + char, "regexp"
        else:
            regex += char
        token += 1
    return kind, (re.compile(regex + r"\Z") if kind == "regexp" else None)


def _ref_match(pattern: str, path: str) -> bool:
    kind, compiled = _ref_compile(pattern)
    if kind == "exact":
        return path == pattern
    if kind == "prefix":
        return path.startswith(pattern[:-2])
    if kind == "suffix":
        suffix = pattern[2:]
        return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
    assert compiled is not None
    return compiled.match(path) is not None


def reference_excluded(data: bytes, path: str) -> bool:
    """PatternMatcher.New + MatchesOrParentMatches, as moby has them."""
    patterns = []
    for line in _ref_read_all(data):
        line = _ref_clean(line.strip())
        exclusion = line.startswith("!")
        patterns.append((exclusion, line[1:] if exclusion else line))
    parents = path.split("/")[:-1]
    matched = False
    for exclusion, pattern in patterns:
        if exclusion != matched:
            continue
        hit = _ref_match(pattern, path) or any(
            _ref_match(pattern, "/".join(parents[: i + 1])) for i in range(len(parents))
        )
        if hit:
            matched = not exclusion
    return matched


def ours(data: bytes, path: str) -> bool:
    return IgnoreMatcher(parse_ignore_file(data)).excluded(path)


# ------------------------------------------------------------------ property test on small alphabets

_PIECES = ["a", "b", ".", "/", "*", "**", "**/", "?", "[ab]", "[^a]", "[a-b]", "\\*", "\\.", "./", "../"]
_NAMES = ["a", "b", "ab", "ba", ".a", "a.b", "aa", "b.a"]

patterns = st.builds(
    lambda bang, slash, pieces, pad: pad + bang + slash + "".join(pieces) + pad,
    st.sampled_from(["", "", "!"]),
    st.sampled_from(["", "", "/", "./"]),
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6),
    st.sampled_from(["", " ", "\t"]),
)
files = st.lists(st.one_of(patterns, st.sampled_from(["# comment", "", "  "])), min_size=1, max_size=5)
paths = st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4).map("/".join)


def _usable(lines: list[str]) -> bool:
    """Lines moby itself accepts: no lone "!" after cleaning."""
    return all(_ref_clean(line.strip()) != "!" for line in _ref_read_all("\n".join(lines).encode()))


@settings(max_examples=600, deadline=None)
@given(files, st.lists(paths, min_size=1, max_size=6))
def test_matches_like_moby_on_small_alphabets(lines: list[str], probes: list[str]) -> None:
    data = "\n".join(lines).encode()
    if not _usable(lines):
        with pytest.raises(RepoInvalid, match="lone"):
            parse_ignore_file(data)
        return
    matcher = IgnoreMatcher(parse_ignore_file(data))
    for path in probes:
        assert matcher.excluded(path) == reference_excluded(data, path), (lines, path)


@pytest.mark.parametrize(
    ("lines", "path", "excluded"),
    [
        (["*.py"], "a.py", True),
        (["*.py"], "d/a.py", False),  # "*" never crosses "/"
        (["**/*.py"], "a.py", True),
        (["**/*.py"], "d/e/a.py", True),
        (["d"], "d/x/y", True),  # a pattern matching a folder excludes everything under it
        (["d", "!d/x"], "d/x/y", False),  # the last matching line wins
        (["d", "!d/x"], "d/z", True),
        (["!d/x", "d"], "d/x/y", True),
        (["**.py"], "xa.py", True),  # moby's suffix match
        (["a**b"], "a/x/b", True),
        (["a**b"], "axb", False),
        (["a/**"], "a", False),
        (["a/**"], "a/b", True),
        (["/b"], "b", True),
        (["./a/../b/"], "b", True),
        (["[^a]x"], "bx", True),
        (["#a"], "#a", False),
        ([" #a"], "#a", True),  # only a "#" in the first column starts a comment
        (["\\#a"], "#a", True),
        (["\ufeffa"], "a", True),  # byte-order mark
        (["a /"], "a", True),  # trimmed again after cleaning, as moby's matcher does
    ],
)
def test_docker_rules(lines: list[str], path: str, excluded: bool) -> None:
    data = "\n".join(lines).encode()
    assert ours(data, path) is excluded
    assert reference_excluded(data, path) is excluded


def test_go_clean() -> None:
    cases = {"": ".", "a//b/./c/": "a/b/c", "/../a": "/a", "../../a": "../../a", "a/../..": "..", "//a": "/a"}
    for raw, cleaned in cases.items():
        assert go_clean(raw) == cleaned
        assert _ref_clean(raw) == cleaned


# ------------------------------------------------------------------ linear work, no clock


def test_pathological_patterns_cost_one_step_per_character() -> None:
    # The SDK's regexps backtrack on these for hours; here each character costs one vector update.
    lines = ["**/" * 200 + "a*" * 150 + "b", "*a" * 24 + "*c", "!" + "**/a" * 100]
    matcher = IgnoreMatcher(parse_ignore_file("\n".join(lines).encode()))
    deep = "/".join(["a" * 40] * 25)  # 1024 characters of "a" and "/", no "b" or "c"
    assert matcher.excluded(deep) is False
    assert matcher.steps <= len(deep) + deep.count("/") + 1
    wide = "a" * 5000
    before = matcher.steps
    assert matcher.excluded(wide) is False
    assert matcher.steps - before <= len(wide) + 1


def test_a_dead_automaton_stops_reading() -> None:
    matcher = IgnoreMatcher(parse_ignore_file(b"abc"))
    assert matcher.excluded("x" * 10_000) is False
    assert matcher.steps == 1  # after "x" no pattern can match: the other 9,999 characters are skipped


# ------------------------------------------------------------------ refusals are the miner's fault


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ok\n\xff\xfe bad\n", r"line 2: not UTF-8 \(byte 0xff at column 1\)"),
        (b"a\n!\n", r"line 2: a lone"),
        (b"!/\n", r"line 1: a lone"),
        (b"[ab\n", r"line 1: .*unclosed"),
        (b"[]a]\n", r"line 1: .*misplaced"),
        (b"[z-a]\n", r"line 1: .*empty range"),
        (b"a\\\n", r"line 1: .*lone backslash"),
        (b"x\n\\d\n", r"line 2: escape \\d"),
        (b"[*]\n", r"line 1: .*inside a character class"),
        (b"a" * (MAX_PATTERN_CHARS + 1), r"line 1: pattern of 1025 characters"),
        (b"a\n" * (MAX_IGNORE_LINES + 1), r"2001 lines"),
        (b"#" * (MAX_IGNORE_BYTES + 1), r"65537 bytes"),
    ],
)
def test_unusable_ignore_files_are_refused_naming_the_line(data: bytes, message: str) -> None:
    with pytest.raises(RepoInvalid, match=message) as info:
        parse_ignore_file(data)
    assert isinstance(info.value, SubmissionRejected)  # the miner's fault: never retried
    assert ".dockerignore" in str(info.value)
