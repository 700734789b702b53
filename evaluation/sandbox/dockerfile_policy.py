"""What a miner's Dockerfile may ask the Docker daemon for, checked before any build; the image checked after.

The only module that imports ``dockerfile`` (BuildKit's own Dockerfile parser, wrapped for Python), so the
instructions judged here are the instructions the daemon will see: line continuations, lowercase
keywords, JSON and shell forms and heredocs are split exactly as Docker splits them.

Why a policy at all: ``ADD <url>``, ``FROM`` and ``COPY --from=<image>`` are resolved by the daemon itself,
in the host's network namespace and with every image on the daemon in reach, before any build network or
container limit applies. So:

* ``FROM`` names an image on the operator's allow-list (``build-allowed-bases``), ``scratch``, or an
  earlier stage. Variables are resolved from the global ``ARG`` defaults overridden by the operator's
  build args. An image that is exactly the value of one of the operator's build args (the tests' and
  demo's ``BASE_IMAGE=voice-validator/base:bookworm``) counts as allowed too: the operator chose it.
* ``ADD`` of a remote source is refused (the daemon fetches it on the host's network), and so is ``ADD``
  of a local archive (the daemon unpacks it: a few MB of gzip become many GB). Plain files stay allowed.
* ``COPY --from`` and ``RUN --mount ...,from=`` only name earlier stages of the same Dockerfile; mounts
  are ``bind`` or ``tmpfs`` only (a cache mount is shared between builds, secret and ssh mounts reach
  the build host's secrets); ``RUN --network`` and ``--security`` only their sandboxed values.
* ``ONBUILD`` is refused (its instructions run in a later build, unchecked), and so is a ``syntax``
  parser directive (a BuildKit frontend is an image the daemon pulls and runs).

After the build, :func:`check_image_config` refuses an image whose environment sets ``LD_PRELOAD`` or
``LD_AUDIT`` (CVE-2025-23266: the NVIDIA toolkit's hook honoured an image's ``LD_PRELOAD`` on the host),
and :func:`runtime_environment` gives the ``NVIDIA_*`` variables a miner container is created with,
whatever the image sets.

Everything here is a pure function of the Dockerfile's text and the repo's files, except
:func:`check_repo_dockerfile`, which reads them (blocking: run it in a thread).
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dockerfile

from evaluation.errors import BuildFailed, DockerfileRefused

# Public bases for Python, CUDA and PyTorch images, any tag; operators pin digests or add their own.
DEFAULT_ALLOWED_BASES: tuple[str, ...] = ("python", "nvidia/cuda", "pytorch/pytorch")
MAX_DOCKERFILE_BYTES = 256 * 1024
DOCKERFILE = "Dockerfile"
# The NVIDIA toolkit's hook reads these from the container's environment on the host.
_FORBIDDEN_IMAGE_ENV = ("LD_PRELOAD", "LD_AUDIT")
GPU_CAPABILITIES = "compute,utility"

# Wildcard ADD sources walk the repo; beyond this many entries the walk stops and the ADD is refused.
_MAX_WALKED_ENTRIES = 100_000
_MAX_WILDCARD_SOURCES = 64
# Steps all wildcard matching of one Dockerfile may take (an honest "*.bin" over 10,000 files takes
# about 300,000), and the longest wildcard source.
_MATCH_STEPS = 2_000_000
_MAX_PATTERN_CHARS = 1024
_SHOWN_CHARS = 100
# Enough for a tar header (512 bytes) and every compression magic.
_HEAD_BYTES = 512

# BuildKit's directive grammar; "syntax" is also read after "//" comments and from a JSON document.
_DIRECTIVE_RE = re.compile(r"^(?:#|//)\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]*")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]*$")
_WILDCARD_CHARS = "*?["
# Docker's default escape character and the one "# escape=`" chooses.
_ESCAPES = ("\\", "`")

# Docker's reference grammar (distribution/reference), enough to normalise names as the daemon does.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_DEFAULT_DOMAIN = "docker.io"
_MAX_NAME_CHARS = 255


# ------------------------------------------------------------------------------------ image references


@dataclass(frozen=True)
class ImageRef:
    """An image reference normalised as Docker does: ``python`` is ``docker.io/library/python:latest``."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        """``domain/path``, the part an allow-list entry without tag or digest matches."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def parse_reference(text: str, *, default_tag: bool = True) -> ImageRef:
    """Parse an image reference; ValueError when Docker would not accept it.

    ``default_tag`` gives a reference without tag or digest the tag ``latest``, as ``FROM`` does; an
    allow-list entry without a tag means any tag instead.
    """
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise ValueError(f"{text!r}: invalid digest")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ValueError(f"{text!r}: invalid tag")
    if not name or len(name) > _MAX_NAME_CHARS:
        raise ValueError(f"{text!r}: invalid name")
    first, slash, remainder = name.partition("/")
    # Docker's rule: the first component is a registry when it has a dot or a port, is localhost, or
    # has an uppercase letter (which a repository path may not).
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, remainder
        if not _DOMAIN_RE.match(domain):
            raise ValueError(f"{text!r}: invalid registry {domain!r}")
    else:
        domain, path = _DEFAULT_DOMAIN, name
    if domain == "index.docker.io":
        domain = _DEFAULT_DOMAIN
    if domain == _DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not _PATH_RE.match(path):
        raise ValueError(f"{text!r}: invalid repository name (lowercase letters, digits, '.', '_', '-')")
    if tag is None and not digest and default_tag:
        tag = "latest"
    return ImageRef(domain, path, tag, digest or None)


@dataclass(frozen=True)
class BaseRule:
    """One allow-list entry: a repository (any tag), ``repo:tag``, or ``repo@sha256:...`` (pinned)."""

    entry: str
    ref: ImageRef

    @classmethod
    def parse(cls, entry: str) -> BaseRule:
        """The rule for ``entry``; ValueError naming the entry when it is no image reference."""
        try:
            return cls(entry, parse_reference(entry.strip(), default_tag=False))
        except ValueError as exc:
            raise ValueError(f"allowed base {entry!r} is not an image reference: {exc}") from None

    def allows(self, ref: ImageRef) -> bool:
        """Whether ``ref`` (a ``FROM`` image) is this entry's repository with its tag and digest."""
        if ref.repository != self.ref.repository:
            return False
        if self.ref.digest is not None and ref.digest != self.ref.digest:
            return False
        return self.ref.tag is None or ref.tag == self.ref.tag


@dataclass(frozen=True)
class BuildPolicy:
    """What a Dockerfile may name: the allowed base images and the operator's build args.

    ``build_args`` are the values the daemon substitutes for declared ``ARG``\\ s; an image that is
    exactly one of them is allowed because the operator chose it.
    """

    allowed_bases: tuple[str, ...] = DEFAULT_ALLOWED_BASES
    build_args: Mapping[str, str] = field(default_factory=dict)
    max_dockerfile_bytes: int = MAX_DOCKERFILE_BYTES

    def __post_init__(self) -> None:
        self.rules()  # a bad entry fails at configuration time, not at the first miner's build
        if self.max_dockerfile_bytes <= 0:
            raise ValueError("max_dockerfile_bytes must be positive")

    def rules(self) -> list[BaseRule]:
        """The allow-list, parsed."""
        return [BaseRule.parse(entry) for entry in self.allowed_bases]


def operator_images(build_args: Mapping[str, str]) -> frozenset[ImageRef]:
    """The images the operator's build args name (values that are image references): allowed bases."""
    found = set()
    for value in build_args.values():
        try:
            found.add(parse_reference(value))
        except ValueError:
            continue
    return frozenset(found)


# ------------------------------------------------------------------------------------ violations


@dataclass(frozen=True)
class Violation:
    """One thing the policy refuses: where (line, instruction as written, shortened) and why."""

    line: int
    instruction: str
    reason: str

    def short(self) -> str:
        """Without the file name: ``line 4: ADD http://...: remote sources are not allowed ...``."""
        if self.line <= 0:
            return self.reason
        return f"line {self.line}: {self.instruction}: {self.reason}"

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{DOCKERFILE}: {self.reason}"
        return f"{DOCKERFILE} line {self.line}: {self.instruction}: {self.reason}"


def shown(text: str, limit: int = _SHOWN_CHARS) -> str:
    """Miner text fit for a log line or a terminal: one line, control characters escaped, shortened."""
    flat = " ".join(text.split())
    safe = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in flat)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def refusal(violations: Sequence[Violation]) -> DockerfileRefused:
    """The error listing every violation (the miner sees all of them at once)."""
    count = len(violations)
    text = "; ".join(str(v) for v in violations)
    return DockerfileRefused(
        f"Dockerfile refused ({count} violation{'s' if count != 1 else ''}): {text}",
        tuple(v.short() for v in violations),
    )


# ------------------------------------------------------------------------------------ word expansion


class _Unresolved(Exception):
    """A word whose value the policy cannot know for sure."""


@dataclass
class _Env:
    """Variables visible to a word: name -> value (None: declared without a value)."""

    values: dict[str, str | None]
    broken: set[str] = field(default_factory=set)  # declared, but their own default could not be resolved


def _expand(word: str, env: _Env | None, escape: str) -> str:
    """Docker's word processing: quotes removed, escapes applied, ``$VAR`` forms substituted.

    ``env`` None: any substitution raises (a word whose variables the policy cannot know). Supported
    forms: ``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``, ``${V+w}``, ``${V:?w}``, ``${V?w}``; others
    raise, and so does a variable that is not set (Docker would make it empty, which is rarely meant).
    """
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if ch == escape:
            out.append(word[i + 1] if i + 1 < n else ch)
            i += 2
        elif ch == "'":
            end = word.find("'", i + 1)
            if end < 0:
                raise _Unresolved("unterminated quote")
            out.append(word[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise _Unresolved("unterminated quote")
                c = word[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < n and word[i + 1] in ('"', "$", escape):
                    out.append(word[i + 1])
                    i += 2
                elif c == "$":
                    text, i = _dollar(word, i, env, escape)
                    out.append(text)
                else:
                    out.append(c)
                    i += 1
        elif ch == "$":
            text, i = _dollar(word, i, env, escape)
            out.append(text)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _expand_unambiguous(word: str, env: _Env) -> str:
    """``word`` expanded under both escape characters a Dockerfile may choose (``# escape=``); raises
    when they differ. The parser applies the directive itself, so rather than guess which one it saw, a
    ``FROM`` or ``ARG`` value must mean the same under both (an honest one has no escapes at all)."""
    values = {_expand(word, env, escape) for escape in _ESCAPES}
    if len(values) != 1:
        raise _Unresolved("escape characters make its value depend on the escape directive")
    return values.pop()


def _dollar(word: str, i: int, env: _Env | None, escape: str) -> tuple[str, int]:
    """Expand the ``$`` form starting at ``word[i]``; returns the text and the index after it."""
    n = len(word)
    if i + 1 >= n:
        return "$", i + 1
    if word[i + 1] == "{":
        start = i + 2
        if start >= n or not _NAME_START.match(word[start]):
            raise _Unresolved("unsupported ${...} form")
        end = start + 1 + len(_NAME_CHARS.match(word, start + 1).group())  # type: ignore[union-attr]
        name = word[start:end]
        close = _brace_end(word, end, escape)
        op_text = word[end:close]
        return _substitute(name, op_text, env, escape), close + 1
    if _NAME_START.match(word[i + 1]):
        end = i + 2 + len(_NAME_CHARS.match(word, i + 2).group())  # type: ignore[union-attr]
        return _substitute(word[i + 1 : end], "", env, escape), end
    if word[i + 1].isdigit():
        raise _Unresolved(f"positional variable ${word[i + 1]}")
    return "$", i + 1


def _brace_end(word: str, i: int, escape: str) -> int:
    """Index of the ``}`` closing a ``${`` whose name ends at ``i`` (skips nested ``${...}``, escapes)."""
    depth = 0
    while i < len(word):
        ch = word[i]
        if ch == escape:
            i += 2
            continue
        if word.startswith("${", i):
            depth += 1
            i += 2
            continue
        if ch == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise _Unresolved("unterminated ${")


def _substitute(name: str, op_text: str, env: _Env | None, escape: str) -> str:
    if env is None:
        raise _Unresolved(f"variable {name}")
    if name in env.broken:
        raise _Unresolved(f"ARG {name}'s default cannot be resolved")
    declared = name in env.values
    value = env.values.get(name)
    is_set = value is not None
    non_empty = bool(value)
    op, operand = _split_operator(name, op_text)
    if op == "":
        if not declared:
            raise _Unresolved(f"{name} is not declared by an ARG before the first FROM")
        if value is None:
            raise _Unresolved(f"ARG {name} has no value (no default, no build arg)")
        return value
    if op in (":-", "-"):
        use = non_empty if op == ":-" else is_set
        return value if use and value is not None else _expand(operand, env, escape)
    if op in (":+", "+"):
        use = non_empty if op == ":+" else is_set
        return _expand(operand, env, escape) if use else ""
    if op in (":?", "?"):
        use = non_empty if op == ":?" else is_set
        if not use or value is None:
            raise _Unresolved(f"{name} is not set")
        return value
    raise AssertionError(op)


def _split_operator(name: str, op_text: str) -> tuple[str, str]:
    """The operator after a ``${NAME`` and its operand; "" for a plain ``${NAME}``."""
    if op_text == "":
        return "", ""
    for op in (":-", ":+", ":?", "-", "+", "?"):
        if op_text.startswith(op):
            return op, op_text[len(op) :]
    # Pattern removal and replacement (${V#p}, ${V%p}, ${V/p/r}) exist only in newer frontends.
    raise _Unresolved(f"unsupported substitution ${{{name}{shown(op_text, 10)}}}")


# ------------------------------------------------------------------------------------ the repo's files


class ContextFiles(Protocol):
    """The build context as the policy sees it (the repo folder)."""

    def kind(self, path: str) -> tuple[str, bytes]:
        """("file", first bytes) | ("dir", b"") | ("missing", b"") | ("outside", b"") for a relative path,
        symlinks followed inside the repo."""
        ...

    def glob(self, pattern: str) -> list[str] | None:
        """Relative paths matching a Docker wildcard pattern; None when the repo is too large to walk."""
        ...


class RepoFiles:
    """:class:`ContextFiles` over a folder on disk. Blocking."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._real_root = os.path.realpath(self._root)
        self._listing: list[str] | None = None
        self._too_many = False
        self._budget = [_MATCH_STEPS]

    def kind(self, path: str) -> tuple[str, bytes]:
        """See :meth:`ContextFiles.kind`."""
        full = os.path.realpath(os.path.join(self._root, path))
        if os.path.commonpath([self._real_root, full]) != self._real_root:
            return "outside", b""
        try:
            # Non-blocking: a FIFO must not hang the check; the daemon refuses special files anyway.
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return ("dir", b"") if os.path.isdir(full) else ("missing", b"")
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                return "dir", b""
            if not stat.S_ISREG(mode):
                return "missing", b""
            head = b""
            while len(head) < _HEAD_BYTES and (chunk := os.read(fd, _HEAD_BYTES - len(head))):
                head += chunk
            return "file", head
        finally:
            os.close(fd)

    def glob(self, pattern: str) -> list[str] | None:
        """See :meth:`ContextFiles.glob`. Every call spends from one budget of matching steps."""
        listing = self._walk()
        if listing is None or len(pattern) > _MAX_PATTERN_CHARS:
            return None
        parts: list[Tokens | None] = []
        for component in pattern.split("/"):
            tokens = None if component == "**" else _glob_tokens(component)
            if tokens is None and component != "**":
                return []  # malformed: Docker's matcher fails it, nothing is added
            parts.append(None if tokens is None else tuple(tokens))
        try:
            return [rel for rel in listing if _match_path(parts, rel.split("/"), self._budget)]
        except _TooCostly:
            return None

    def _walk(self) -> list[str] | None:
        if self._listing is None and not self._too_many:
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self._root, followlinks=False):
                base = os.path.relpath(dirpath, self._root)
                for name in [*dirnames, *filenames]:
                    found.append(name if base == "." else f"{base}/{name}")
                if len(found) > _MAX_WALKED_ENTRIES:
                    self._too_many = True
                    return None
            self._listing = found
        return self._listing


def _glob_tokens(component: str) -> list[tuple[str, Any]] | None:
    """Tokens of one path component of a Go ``filepath.Match`` pattern; None when malformed."""
    tokens: list[tuple[str, Any]] = []
    i, n = 0, len(component)
    while i < n:
        ch = component[i]
        if ch == "*":
            if not tokens or tokens[-1][0] != "*":
                tokens.append(("*", None))
            i += 1
        elif ch == "?":
            tokens.append(("?", None))
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                return None
            tokens.append(("c", component[i + 1]))
            i += 2
        elif ch == "[":
            parsed = _glob_class(component, i + 1)
            if parsed is None:
                return None
            klass, i = parsed
            tokens.append(("[", klass))
        else:
            tokens.append(("c", ch))
            i += 1
    return tokens


def _glob_class(text: str, i: int) -> tuple[tuple[bool, list[tuple[str, str]]], int] | None:
    """A ``[...]`` class starting after ``[``: (negated, ranges) and the index after ``]``."""
    negated = i < len(text) and text[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i >= len(text):
            return None
        if text[i] == "]" and ranges:
            return (negated, ranges), i + 1
        low, i = _class_char(text, i)
        if low is None:
            return None
        high: str | None = low
        if i < len(text) and text[i] == "-":
            high, i = _class_char(text, i + 1)
            if high is None:
                return None
        ranges.append((low, high or low))


def _class_char(text: str, i: int) -> tuple[str | None, int]:
    if i >= len(text) or text[i] in "-]":
        return None, i
    if text[i] == "\\":
        return (text[i + 1], i + 2) if i + 1 < len(text) else (None, i)
    return text[i], i + 1


def _token_matches(token: tuple[str, Any], ch: str) -> bool:
    kind, value = token
    if kind == "?":
        return True
    if kind == "c":
        return bool(ch == value)
    negated, ranges = value
    return any(low <= ch <= high for low, high in ranges) != negated


Tokens = tuple[tuple[str, Any], ...]


def _match_tokens(tokens: Tokens, name: str) -> tuple[bool, int]:
    """Go's ``filepath.Match`` for one component, and the steps it took: at most about
    ``len(tokens) * len(name)``, since a star only ever backtracks to itself (a regular expression would
    backtrack exponentially on patterns like ``*a*a*a*a*b``)."""
    t = s = steps = 0
    star_t, star_s = -1, 0
    while s < len(name):
        steps += 1
        if t < len(tokens) and tokens[t][0] != "*" and _token_matches(tokens[t], name[s]):
            t += 1
            s += 1
        elif t < len(tokens) and tokens[t][0] == "*":
            star_t, star_s = t, s
            t += 1
        elif star_t >= 0:
            star_s += 1
            s = star_s
            t = star_t + 1
        else:
            return False, steps
    while t < len(tokens) and tokens[t][0] == "*":
        t += 1
    return t == len(tokens), steps


def _match_component(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` for one path component (a malformed pattern matches nothing)."""
    tokens = _glob_tokens(pattern)
    return tokens is not None and _match_tokens(tuple(tokens), name)[0]


class _TooCostly(Exception):
    """Matching a wildcard against the repo would take more steps than the check allows."""


def _match_path(pattern: Sequence[Tokens | None], path: list[str], budget: list[int]) -> bool:
    """Component-wise match (None: ``**``, any number of components: broader than Docker's matcher,
    which only makes the archive check stricter). ``budget[0]`` is the steps left; _TooCostly past it."""
    cols = len(path)
    # reach[j]: the pattern so far matches path[:j]; filled one pattern component at a time.
    reach = [True] + [False] * cols
    for part in pattern:
        nxt = [False] * (cols + 1)
        for j in range(cols + 1):
            if not reach[j]:
                continue
            if part is None:
                nxt[j:] = [True] * (cols + 1 - j)
                break
            if j < cols:
                matched, steps = _match_tokens(part, path[j])
                budget[0] -= steps + 1
                if budget[0] < 0:
                    raise _TooCostly
                nxt[j + 1] = nxt[j + 1] or matched
        reach = nxt
    return reach[cols]


# Docker's own magic numbers (pkg/archive DetectCompression).
_ARCHIVE_MAGIC = (
    (re.compile(rb"\x1f\x8b\x08"), "gzip"),
    (re.compile(rb"BZh[1-9]"), "bzip2"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd"),
)


def archive_kind(head: bytes) -> str | None:
    """The archive format ADD would unpack, judged by content as Docker does; None for a plain file.

    Docker unpacks a local source when it decompresses (gzip, bzip2, xz; zstd in newer daemons) to a
    readable tar header. Any compressed file is treated as an archive here, which is stricter.
    """
    for magic, kind in _ARCHIVE_MAGIC:
        if magic.match(head):
            return kind
    if len(head) >= 512 and (head[257:262] == b"ustar" or _tar_checksum_ok(head[:512])):
        return "tar"
    return None


def _tar_checksum_ok(block: bytes) -> bool:
    """A tar header's checksum holds (how Go's tar reader accepts old v7 headers without a magic)."""
    field_text = block[148:156].replace(b"\0", b" ").strip()
    if not field_text or any(c not in b"01234567" for c in field_text):
        return False
    stored = int(field_text, 8)
    masked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(masked)
    signed = sum(b - 256 if b > 127 else b for b in masked)
    return stored in (unsigned, signed)


# ------------------------------------------------------------------------------------ the policy


@dataclass
class _Stages:
    names: list[str | None] = field(default_factory=list)

    def earlier(self, reference: str, *, by_index: bool = True) -> bool:
        """Whether ``reference`` (a name, or an index where ``by_index``) is a stage before the current one.

        ``FROM`` takes names only: there ``FROM 0`` names an image, so it is judged as one.
        """
        before = self.names[:-1]
        if reference.isdigit():
            return by_index and int(reference) < len(before)
        return reference.lower() in {name for name in before if name}


def _flag(raw: str) -> tuple[str, str | None]:
    """``--name=value`` -> (lowercase name, value or None for a bare flag)."""
    name, eq, value = raw.lstrip("-").partition("=")
    return name.lower(), (value if eq else None)


def _directives(text: str) -> list[Violation]:
    """The refused parser directives at the top of the file.

    BuildKit reads ``syntax`` from ``#`` and ``//`` comments at the top (after an optional shebang) and
    from a JSON document; the whole leading comment block is scanned here, which is stricter.
    """
    violations: list[Violation] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if line and not line.startswith(("#", "//")):
            break
        match = _DIRECTIVE_RE.match(line)
        if match is not None and match.group(1).lower() == "syntax":
            violations.append(
                Violation(
                    number,
                    shown(line),
                    "parser directives naming a frontend are not allowed (the daemon would pull and run "
                    "that frontend image)",
                )
            )
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and "syntax" in document:
        violations.append(Violation(1, "{...}", "a JSON 'syntax' directive is not allowed"))
    return violations


def _heredoc_token(token: str, names: set[str]) -> bool:
    if not token.startswith("<<"):
        return False
    return token[2:].lstrip("-").strip("'\"") in names


class _Checker:
    """One pass over the parsed instructions, collecting violations."""

    def __init__(self, policy: BuildPolicy, files: ContextFiles) -> None:
        self.policy = policy
        self.rules = policy.rules()
        self.operator_images = operator_images(policy.build_args)
        self.files = files
        self.stages = _Stages()
        self.globals = _Env({})
        self.violations: list[Violation] = []
        self.wildcards = 0

    def refuse(self, command: Any, reason: str) -> None:
        self.violations.append(Violation(command.start_line, shown(command.original), reason))

    def run(self, commands: Iterable[Any]) -> list[Violation]:
        for command in commands:
            handler = getattr(self, f"on_{command.cmd.upper()}", None)
            if handler is not None:
                handler(command)
        return self.violations

    def on_ARG(self, command: Any) -> None:
        if self.stages.names:
            return  # a stage's ARGs are not visible to FROM
        for token in command.value:
            name, eq, raw = token.partition("=")
            if eq:
                try:
                    known = _Env(dict(self.globals.values), set(self.globals.broken))
                    self.globals.values[name] = _expand_unambiguous(raw, known)
                    self.globals.broken.discard(name)
                except _Unresolved:
                    self.globals.broken.add(name)
            else:
                self.globals.values.setdefault(name, None)
            if name in self.policy.build_args:
                self.globals.values[name] = self.policy.build_args[name]
                self.globals.broken.discard(name)

    def on_FROM(self, command: Any) -> None:
        values = list(command.value)
        stage_name: str | None = None
        if len(values) == 3 and values[1].lower() == "as":
            stage_name = values[2].lower()
            if not _STAGE_NAME_RE.match(stage_name):
                self.refuse(command, f"invalid stage name {shown(values[2], 40)!r}")
        elif len(values) != 1:
            self.refuse(command, "expected FROM <image> [AS <name>]")
            self.stages.names.append(None)
            return
        self.stages.names.append(stage_name)
        env = _Env(self.globals.values, set(self.globals.broken))
        try:
            image = _expand_unambiguous(values[0], env)
        except _Unresolved as exc:
            self.refuse(command, f"cannot resolve the base image: {exc}")
            return
        if image == "scratch" or self.stages.earlier(image, by_index=False):
            return
        try:
            ref = parse_reference(image)
        except ValueError as exc:
            self.refuse(command, f"not a valid image reference: {exc}")
            return
        if ref in self.operator_images or any(rule.allows(ref) for rule in self.rules):
            return
        allowed = ", ".join(self.policy.allowed_bases) or "none"
        self.refuse(
            command,
            f"base image {shown(str(ref), 80)} is not allowed (allowed: {shown(allowed, 200)}, scratch, "
            "or an earlier stage; the operator's setting build-allowed-bases)",
        )

    def _check_from_stage(self, command: Any, what: str, reference: str) -> None:
        if any(c in reference for c in "$'\"" + "".join(_ESCAPES)):
            self.refuse(command, f"{what}: variables and quotes are not allowed in a stage reference")
        elif not reference or not self.stages.earlier(reference):
            self.refuse(
                command,
                f"{what}={shown(reference, 60)}: only earlier stages of this Dockerfile may be used "
                "(anything else is an image the daemon resolves)",
            )

    def on_COPY(self, command: Any) -> None:
        for raw in command.flags:
            name, value = _flag(raw)
            if name == "from":
                self._check_from_stage(command, "--from", value or "")

    def on_ADD(self, command: Any) -> None:
        self.on_COPY(command)  # ADD has no --from; a daemon that grew one must not widen the policy
        values = list(command.value)
        names = {doc.name for doc in command.heredocs}
        for token in values[:-1]:
            if _heredoc_token(token, names):
                continue
            try:
                # Either escape character: a source must be judged as whichever the parser used.
                sources = {_expand(token, None, escape) for escape in _ESCAPES}
            except _Unresolved:
                self.refuse(
                    command,
                    f"source {shown(token, 60)!r}: variables and unclosed quotes are not allowed in ADD "
                    "sources (the policy could not tell what they name; use COPY for local files)",
                )
                continue
            for source in sorted(sources):
                self._check_add_source(command, source)

    def _check_add_source(self, command: Any, source: str) -> None:
        if _URL_RE.match(source) or source.startswith("git@"):
            self.refuse(
                command, "remote sources are not allowed (the daemon fetches them on the host's network)"
            )
            return
        path = posixpath.normpath("/" + source.lstrip("/")).lstrip("/") or "."
        if any(c in path for c in _WILDCARD_CHARS):
            self.wildcards += 1
            matches = self.files.glob(path) if self.wildcards <= _MAX_WILDCARD_SOURCES else None
            if matches is None:
                self.refuse(
                    command,
                    f"wildcard source {shown(source, 60)!r}: too costly to check (too many wildcards, "
                    "files or pattern characters); name the files",
                )
                return
        else:
            matches = [path]
        # Docker unpacks a local tar archive only when it is the source itself (a file, or a file a
        # wildcard matched); "If <src> is a directory, the entire contents of the directory are copied",
        # archives inside included, unpacked never. So only direct file sources are read here.
        for match in matches:
            kind, head = self.files.kind(match)
            if kind == "outside":
                self.refuse(command, f"source {shown(match, 60)} leads outside the repo")
            elif kind == "file":
                archive = archive_kind(head)
                if archive is not None:
                    self.refuse(
                        command,
                        f"{shown(match, 60)} is a {archive} archive, which ADD would unpack (a few MB can "
                        "become many GB): use COPY, or unpack it in a RUN step",
                    )

    def on_RUN(self, command: Any) -> None:
        for raw in command.flags:
            name, value = _flag(raw)
            if name == "mount":
                self._check_mount(command, value or "")
            elif name == "network":
                if value not in ("none", "default"):
                    self.refuse(command, f"--network={shown(value or '', 20)} is not allowed")
            elif name == "security":
                if value != "sandbox":
                    self.refuse(command, f"--security={shown(value or '', 20)} is not allowed")
            else:
                self.refuse(command, f"RUN flag --{shown(name, 20)} is not allowed")

    def _check_mount(self, command: Any, spec: str) -> None:
        if "$" in spec:
            self.refuse(command, "variables are not allowed in --mount")
            return
        try:
            fields = next(csv.reader([spec]))
        except (csv.Error, StopIteration):
            self.refuse(command, "--mount cannot be read")
            return
        options: dict[str, str] = {}
        for item in fields:
            key, _, value = item.partition("=")
            options[key.strip().lower()] = value
        kind = options.get("type", "bind").lower()
        if kind == "cache":
            self.refuse(command, "--mount=type=cache is not allowed (a cache mount is shared between builds)")
        elif kind in ("secret", "ssh"):
            self.refuse(command, f"--mount=type={kind} is not allowed (it reaches the build host's {kind}s)")
        elif kind not in ("bind", "tmpfs"):
            self.refuse(command, f"--mount=type={shown(kind, 20)} is not allowed (only bind and tmpfs)")
        if "from" in options:
            self._check_from_stage(command, "--mount from", options["from"])

    def on_ONBUILD(self, command: Any) -> None:
        self.refuse(
            command, "ONBUILD is not allowed (its instructions would run in a later build, unchecked)"
        )


def dockerfile_violations(text: str, policy: BuildPolicy, files: ContextFiles) -> list[Violation]:
    """Every violation of ``policy`` in the Dockerfile ``text``, in line order (pure, given ``files``)."""
    if len(text.encode("utf-8", errors="surrogatepass")) > policy.max_dockerfile_bytes:
        return [Violation(0, "", f"larger than {policy.max_dockerfile_bytes} bytes")]
    text = text.removeprefix("\ufeff")
    violations = _directives(text)
    try:
        commands = dockerfile.parse_string(text)
    except (dockerfile.GoParseError, ValueError) as exc:
        return [*violations, Violation(0, "", f"cannot be parsed: {shown(str(exc), 200)}")]
    violations += _Checker(policy, files).run(commands)
    return sorted(violations, key=lambda v: v.line)


def read_dockerfile(repo_dir: Path, policy: BuildPolicy) -> str | Violation:
    """The repo's Dockerfile as text, or the violation that stops it being read (size, encoding, kind)."""
    path = Path(repo_dir) / DOCKERFILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return Violation(0, "", "missing")
    except OSError as exc:
        return Violation(0, "", f"cannot be read ({exc.strerror}; it must be a regular file)")
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return Violation(0, "", "must be a regular file")
        raw = handle.read(policy.max_dockerfile_bytes + 1)
    if len(raw) > policy.max_dockerfile_bytes:
        return Violation(0, "", f"larger than {policy.max_dockerfile_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Violation(0, "", f"is not valid UTF-8 (byte {exc.start})")


def repo_violations(repo_dir: Path, policy: BuildPolicy) -> list[Violation]:
    """Every violation of ``policy`` in the repo's Dockerfile. Blocking: run it in a thread."""
    text = read_dockerfile(repo_dir, policy)
    if isinstance(text, Violation):
        return [text]
    return dockerfile_violations(text, policy, RepoFiles(repo_dir))


def check_repo_dockerfile(repo_dir: Path, policy: BuildPolicy) -> None:
    """Raise :class:`DockerfileRefused` listing every violation, before anything reaches the daemon."""
    violations = repo_violations(repo_dir, policy)
    if violations:
        raise refusal(violations)


# ------------------------------------------------------------------------------------ after the build


def _env_names(image_env: Iterable[str]) -> Iterator[str]:
    for entry in image_env:
        yield str(entry).partition("=")[0]


def check_image_config(image_attrs: Mapping[str, Any], where: str = "the image") -> None:
    """BuildFailed when the built image's environment sets ``LD_PRELOAD`` or ``LD_AUDIT``.

    CVE-2025-23266: the NVIDIA container toolkit's hook ran on the host with the image's ``LD_PRELOAD``.
    A model server has no use for either, so the image is refused rather than patched.
    """
    env = (image_attrs.get("Config") or {}).get("Env") or []
    found = sorted({name for name in _env_names(env) if name in _FORBIDDEN_IMAGE_ENV})
    if found:
        raise BuildFailed(
            f"{where}: the image's environment sets {', '.join(found)} (ENV): refused, the GPU runtime's "
            "hook would load it on the host (CVE-2025-23266)"
        )


def runtime_environment(image_env: Iterable[str], device_ids: Sequence[str]) -> dict[str, str]:
    """``NVIDIA_*`` variables a miner container is created with, overriding what its image sets.

    ``NVIDIA_VISIBLE_DEVICES`` is the assigned GPU ids (``void``: none, even where the NVIDIA runtime is
    the daemon's default), capabilities are ``compute,utility``, and every other ``NVIDIA_*`` variable of
    the image is emptied: honest CUDA bases set ``NVIDIA_REQUIRE_CUDA`` and the like, so they are not
    refused, but none of them may steer the runtime (MIG control devices, disabled checks).
    """
    env = {name: "" for name in _env_names(image_env) if name.startswith("NVIDIA_")}
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(device_ids) if device_ids else "void"
    env["NVIDIA_DRIVER_CAPABILITIES"] = GPU_CAPABILITIES
    return env
