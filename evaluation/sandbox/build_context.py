"""The build context the validator sends to the daemon, made by the validator itself (no docker import).

The docker SDK would read the repo's ``.dockerignore`` inside the validator's process (with backtracking
regular expressions) and tar the folder its own way. Instead:

* :func:`context_members` lists what is sent, after the ignore rules of our own linear-time matcher
  (:mod:`evaluation.sandbox.dockerignore`). The ``Dockerfile`` is always sent, the ``.dockerignore``
  never (so the daemon has no ignore file to evaluate either). Symlinks are sent as symlinks (never
  followed; fetch's checks already refuse links that leave the repo), special files are refused.
* :func:`tar_stream` writes those members as a tar, chunk by chunk: sorted, owner 0:0, one fixed
  mtime, the repo's permission bits; never the whole archive in memory nor a second copy on disk, and
  never more than the context cap.
* :func:`context_digest` hashes exactly that stream (plus the build args): the same context gives the
  same digest, which is part of the image cache key.

Blocking throughout (disk reads): call from a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from evaluation.errors import InfrastructureError, RepoInvalid
from evaluation.sandbox.dockerignore import (
    IGNORE_FILE,
    MAX_IGNORE_BYTES,
    Cursor,
    IgnoreMatcher,
    parse_ignore_file,
)

DOCKERFILE = "Dockerfile"
CHUNK_BYTES = 1 << 20
# 2000-01-01T00:00:00Z: fixed so identical files give identical layers, and after 1980 so that a
# build zipping context files (a wheel) does not fail on pre-ZIP-epoch timestamps.
FIXED_MTIME = 946_684_800
# A tar needs a header per member; a repo that passed fetch's file-count cap is far below this.
MAX_MEMBERS = 200_000
_BLOCK = tarfile.BLOCKSIZE
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)

FILE = "file"
DIRECTORY = "dir"
SYMLINK = "symlink"


@dataclass(frozen=True)
class ContextMember:
    """One entry of the build context: relative slash path, kind, permission bits, size, link target."""

    path: str
    kind: str
    mode: int
    size: int = 0
    linkname: str = ""


def load_ignore_rules(repo_dir: Path) -> IgnoreMatcher | None:
    """The repo's ``.dockerignore`` compiled, or None without one. RepoInvalid when it is unusable."""
    path = Path(repo_dir) / IGNORE_FILE
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise RepoInvalid(f"{IGNORE_FILE} must be a regular file, not a symlink, folder or special file")
    if info.st_size > MAX_IGNORE_BYTES:
        raise RepoInvalid(f"{IGNORE_FILE} is {info.st_size} bytes, at most {MAX_IGNORE_BYTES} are accepted")
    with open(path, "rb") as handle:
        data = handle.read(MAX_IGNORE_BYTES + 1)
    return IgnoreMatcher(parse_ignore_file(data))


def context_members(repo_dir: Path, rules: IgnoreMatcher | None = None) -> list[ContextMember]:
    """What the build context holds after the ignore rules, parents before children, sorted by name.

    ``rules`` None reads the repo's own ``.dockerignore``. A directory that is excluded is still sent
    (as a folder entry) when a later ``!`` line keeps something inside it. RepoInvalid for a special
    file (FIFO, socket, device) or a ``Dockerfile`` that is not a regular file.
    """
    root = Path(repo_dir)
    if rules is None:
        rules = load_ignore_rules(root)
    dockerfile = root / DOCKERFILE
    if not dockerfile.is_file() or dockerfile.is_symlink():
        raise RepoInvalid(f"{DOCKERFILE} must be a regular file at the top of the repo")
    kept: list[ContextMember] = []
    folders: dict[str, ContextMember] = {}
    seen = 0
    # Depth-first with an explicit stack: a deep tree must not hit the interpreter's recursion limit.
    stack: list[tuple[str, Cursor | None]] = [("", rules.root() if rules else None)]
    while stack:
        prefix, cursor = stack.pop()
        with os.scandir(root / prefix if prefix else root) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        below: list[tuple[str, Cursor | None]] = []
        for entry in entries:
            rel = prefix + entry.name
            if rel == IGNORE_FILE:
                continue
            seen += 1
            if seen > MAX_MEMBERS:
                raise RepoInvalid(f"the build context has more than {MAX_MEMBERS} entries")
            member = _member(entry, rel)
            excluded, inside = False, None
            if rules is not None and cursor is not None and rel != DOCKERFILE:
                excluded, inside = rules.entry(cursor, entry.name)
            if member.kind == DIRECTORY:
                folders[rel] = member
                # With no "!" line nothing under an excluded folder can come back: skip the walk.
                if not excluded or (rules is not None and rules.has_exclusions):
                    below.append((rel + "/", inside))
            if not excluded:
                kept.append(member)
        stack.extend(reversed(below))
    return _with_parents(kept, folders)


def _member(entry: os.DirEntry[str], rel: str) -> ContextMember:
    """The member for one directory entry; RepoInvalid for what a tar of a repo cannot hold."""
    info = entry.stat(follow_symlinks=False)
    mode = stat.S_IMODE(info.st_mode) & 0o777  # setuid, setgid, sticky: nothing a repo may carry
    if stat.S_ISLNK(info.st_mode):
        return ContextMember(rel, SYMLINK, 0o777, linkname=os.readlink(entry.path))
    if stat.S_ISDIR(info.st_mode):
        return ContextMember(rel, DIRECTORY, mode)
    if stat.S_ISREG(info.st_mode):
        return ContextMember(rel, FILE, mode, size=info.st_size)
    raise RepoInvalid(f"special file in repo: {rel}")


def _with_parents(kept: list[ContextMember], folders: Mapping[str, ContextMember]) -> list[ContextMember]:
    """``kept`` plus the folders above each kept entry (an excluded folder a ``!`` line reopened)."""
    paths = {member.path for member in kept}
    extra: list[ContextMember] = []
    for member in kept:
        parent = member.path.rpartition("/")[0]
        while parent and parent not in paths:
            paths.add(parent)
            extra.append(folders[parent])
            parent = parent.rpartition("/")[0]
    return sorted(kept + extra, key=lambda member: member.path.split("/"))


def tar_header(member: ContextMember) -> bytes:
    """The tar header block(s) of ``member``: PAX for long or non-ASCII names, fixed owner and time."""
    info = tarfile.TarInfo(member.path)
    info.mode = member.mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = FIXED_MTIME
    if member.kind == FILE:
        info.type, info.size = tarfile.REGTYPE, member.size
    elif member.kind == DIRECTORY:
        info.type = tarfile.DIRTYPE
    else:
        info.type, info.linkname = tarfile.SYMTYPE, member.linkname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> int:
    return -size % _BLOCK


def context_size(members: Sequence[ContextMember]) -> int:
    """The exact number of bytes :func:`tar_stream` writes for ``members``."""
    total = len(_END_OF_ARCHIVE)
    for member in members:
        total += len(tar_header(member)) + member.size + _padding(member.size)
    return total


def check_context_size(members: Sequence[ContextMember], max_bytes: int) -> int:
    """The context's size; RepoInvalid when it is over ``max_bytes`` (the context cap)."""
    size = context_size(members)
    if size > max_bytes:
        raise RepoInvalid(
            f"the build context is {size} bytes ({size / 2**30:.2f} GiB) after .dockerignore, "
            f"more than the cap of {max_bytes} bytes ({max_bytes / 2**30:.2f} GiB)"
        )
    return size


def tar_stream(
    repo_dir: Path,
    members: Sequence[ContextMember],
    *,
    max_bytes: int,
    chunk_bytes: int = CHUNK_BYTES,
    check: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """The tar of ``members`` (read from ``repo_dir``) as chunks of at most ``chunk_bytes`` bytes.

    ``check`` runs before each chunk and may raise to stop the stream (a deadline, an abort). Files are
    opened without following links and must still be the size they were listed with: a snapshot that
    changes while it is sent is our failure (InfrastructureError). More than ``max_bytes`` in total
    raises RepoInvalid, so a cap holds even if sizes were never checked before.
    """
    buffer = bytearray()
    sent = 0

    def flush() -> bytes:
        nonlocal sent
        sent += len(buffer)
        if sent > max_bytes:
            raise RepoInvalid(f"the build context is more than the cap of {max_bytes} bytes")
        if check is not None:
            check()
        out = bytes(buffer)
        buffer.clear()
        return out

    for member in members:
        buffer += tar_header(member)
        if member.kind == FILE:
            with _open_member(Path(repo_dir) / member.path, member) as handle:
                left = member.size
                while left:
                    # Top the buffer up to a whole chunk: one copy per byte, chunks of equal size.
                    piece = handle.read(min(left, max(chunk_bytes - len(buffer), 1)))
                    if not piece:
                        raise InfrastructureError(f"build context: {member.path} shrank while it was sent")
                    left -= len(piece)
                    buffer += piece
                    if len(buffer) >= chunk_bytes:
                        yield flush()
            buffer += b"\0" * _padding(member.size)
        if len(buffer) >= chunk_bytes:
            yield flush()
    buffer += _END_OF_ARCHIVE
    while len(buffer) > chunk_bytes:
        rest = buffer[chunk_bytes:]
        del buffer[chunk_bytes:]
        yield flush()
        buffer += rest
    yield flush()


def _open_member(path: Path, member: ContextMember) -> BinaryIO:
    """The member's file opened for reading, checked to be the regular file of the listing's size."""
    try:
        # O_NOFOLLOW: never a link swapped in; O_NONBLOCK: a FIFO swapped in must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise InfrastructureError(f"build context: {member.path} cannot be opened any more: {exc}") from exc
    handle = os.fdopen(fd, "rb", buffering=0)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != member.size:
        handle.close()
        raise InfrastructureError(f"build context: {member.path} changed after it was listed")
    return handle


def context_digest(
    repo_dir: Path,
    build_args: Mapping[str, str],
    members: Sequence[ContextMember] | None = None,
    *,
    max_bytes: int | None = None,
) -> str:
    """SHA-256 (hex) over the build args and the exact tar stream :func:`tar_stream` sends.

    A revision names fixed content on the hub, but not every repo source is the hub (local folders in
    tests and demos reuse revisions), so the image cache key also covers what the daemon is sent.
    ``members`` None lists them from ``repo_dir`` (reading its ``.dockerignore``).
    """
    if members is None:
        members = context_members(Path(repo_dir))
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(build_args.items())).encode())
    cap = context_size(members) if max_bytes is None else max_bytes
    for chunk in tar_stream(Path(repo_dir), members, max_bytes=cap):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class PreparedContext:
    """A repo's build context, checked and hashed: what is sent, how many bytes, and its digest."""

    members: tuple[ContextMember, ...]
    size: int
    digest: str


def prepare_context(repo_dir: Path, build_args: Mapping[str, str], max_bytes: int) -> PreparedContext:
    """List, size-check (RepoInvalid over ``max_bytes``) and hash the build context of ``repo_dir``."""
    members = tuple(context_members(Path(repo_dir)))
    size = check_context_size(members, max_bytes)
    return PreparedContext(members, size, context_digest(repo_dir, build_args, members, max_bytes=max_bytes))
