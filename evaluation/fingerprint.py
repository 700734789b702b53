"""Content fingerprints of a fetched miner repo, for copy detection.

Two hotkeys that commit the same model should not both earn: only the earliest commitment may. The
validator tells copies apart by fingerprints of what was actually fetched at the committed revision, not by
repo names or by anything the miner writes on chain (the legacy validator's "hash" covered names only, so
copies went unnoticed).

Two fingerprints, both sha256 hex strings:

* :func:`content_fingerprint` covers every regular file and symlink with its relative path, except the
  files a copier must or may change to claim a repo as theirs and that carry no model (:data:`IGNORED_NAMES`
  anywhere in the tree, the client bookkeeping under ``.cache/huggingface/`` at the top, anything in a
  ``.git`` folder). A byte-for-byte re-upload with a new ``hotkey.txt`` or README is caught.
* :func:`weights_fingerprint` covers only the contents of large files (the model weights), without their
  names. A copier who edits ``server.py``, adds a file or renames ``model.safetensors`` but serves the same
  weights is caught.

What a copier can still evade, on purpose of this module's scope: changing a single byte of the weights
(fine-tuning one step, re-serialising, re-sharding into files below the size threshold, a different dtype)
gives new fingerprints. That is the job of the evaluation comparison (near-identical answers) later; these
fingerprints only make the cheapest copy, re-uploading someone's files, worthless.

Pure functions with blocking file I/O; model files are GBs, so files are streamed in chunks and the caller
runs these in a thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

# Files that identify the miner or describe the repo but carry no model: a copier changes these freely.
IGNORED_NAMES = frozenset({"hotkey.txt", "README.md", ".gitattributes"})
# Folders that are never repo content: git's own data (the hub refuses ".git" paths) ...
IGNORED_DIR_NAMES = frozenset({".git"})
# ... and huggingface_hub's download bookkeeping, which sits only at the top. Other ".cache" folders stay
# covered: ignoring them all would let a copier hide copied weights where no fingerprint looks.
IGNORED_TOP_PATHS = (".cache/huggingface",)
DEFAULT_MIN_WEIGHT_BYTES = 1 << 20
_CHUNK_BYTES = 4 << 20
# Record kinds keep a symlink apart from a regular file whose bytes equal the link's target string.
_FILE = b"F"
_LINK = b"L"


def content_fingerprint(repo_dir: Path) -> str:
    """Fingerprint every file of the repo that is model or code, with its relative path.

    Independent of where the repo lies on disk and of directory listing order. Symlinks are not followed:
    the link's target string is hashed instead, so a link cannot pull in (or hide behind) files outside
    the repo. Special files (FIFOs, devices) are skipped; :func:`evaluation.fetch.check_repo` rejects
    them before this runs.
    """
    digest = hashlib.sha256(b"content-v1\n")
    for kind, rel, file_hash in _entries(Path(repo_dir)):
        digest.update(kind + b"\0" + rel.encode("utf-8", "surrogateescape") + b"\0" + file_hash + b"\n")
    return digest.hexdigest()


def weights_fingerprint(repo_dir: Path, min_bytes: int = DEFAULT_MIN_WEIGHT_BYTES) -> str | None:
    """Fingerprint the contents of the repo's large regular files (``min_bytes`` or more), or None.

    File names are left out on purpose: renaming or moving a weights file does not evade it, and neither
    does any change to code or small config files. Returns None when the repo has no file that large,
    because an empty fingerprint would make every weightless repo a "copy" of every other.
    """
    hashes = sorted(
        file_hash for kind, _rel, file_hash in _entries(Path(repo_dir), min_bytes=min_bytes) if kind == _FILE
    )
    if not hashes:
        return None
    digest = hashlib.sha256(b"weights-v1\n")
    for file_hash in hashes:
        digest.update(file_hash + b"\n")
    return digest.hexdigest()


def file_sha256(path: Path, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """The sha256 hex digest of one file's bytes, read in chunks so memory stays flat for GB files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _entries(repo_dir: Path, min_bytes: int | None = None) -> Iterator[tuple[bytes, str, bytes]]:
    """(kind, relative posix path, sha256 hex as bytes) per covered file, sorted by path.

    With ``min_bytes`` only regular files at least that large are hashed (the others are not read at all).
    """
    if not repo_dir.is_dir():
        raise NotADirectoryError(f"not a repo folder: {repo_dir}")
    found: list[tuple[str, Path, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(repo_dir, followlinks=False):
        base = Path(dirpath)
        rel_dir = base.relative_to(repo_dir).as_posix()
        # Pruning in place keeps os.walk out of ignored folders entirely.
        dirnames[:] = [
            name
            for name in dirnames
            if name not in IGNORED_DIR_NAMES and _join(rel_dir, name) not in IGNORED_TOP_PATHS
        ]
        # os.walk lists symlinks to folders among dirnames; they are entries of their own here.
        candidates = list(filenames) + [name for name in dirnames if (base / name).is_symlink()]
        for name in candidates:
            if name in IGNORED_NAMES:
                continue
            full = base / name
            found.append((_join(rel_dir, name), full, full.lstat()))
    found.sort(key=lambda item: item[0])
    for rel, full, info in found:
        if stat.S_ISLNK(info.st_mode):
            if min_bytes is None:
                target = os.fsencode(os.readlink(full))
                yield _LINK, rel, hashlib.sha256(target).hexdigest().encode()
        elif stat.S_ISREG(info.st_mode):
            if min_bytes is None or info.st_size >= min_bytes:
                yield _FILE, rel, file_sha256(full).encode()


def _join(rel_dir: str, name: str) -> str:
    return name if rel_dir == "." else f"{rel_dir}/{name}"
