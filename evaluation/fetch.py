"""Getting a miner's repo onto local disk at exactly its committed revision, and checking it before any build.

This is the only module that imports ``huggingface_hub`` (the hub adapter). Two sources implement the
:class:`RepoSource` port: :class:`HubRepoSource` for the validator (a hub, or :mod:`evaluation.localhub`
in the demo and tests) and :class:`LocalDirSource` for miners trying their own folder.

The hub source asks for the revision's file listing first and refuses oversized or oddly named repos
before a single file is downloaded; then it downloads into a private staging folder, verifies every file
against the listing's digests and only then moves the result into place. :func:`check_repo` is the
layout and ``hotkey.txt`` check that runs before anything is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import DisabledRepoError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import tqdm as hf_tqdm

from evaluation.errors import EvaluationError, InfrastructureError, RepoInvalid
from evaluation.types import Submission

DEFAULT_MAX_REPO_BYTES = 20 * 2**30
DEFAULT_MAX_FILES = 10_000
DEFAULT_FETCH_TIMEOUT_S = 1800.0
REQUIRED_FILES = ("Dockerfile", "server.py", "inference.py", "requirements.txt", "hotkey.txt")
HOTKEY_FILE = "hotkey.txt"
HOTKEY_MAX_BYTES = 1024  # hotkey.txt must be smaller than this

# The hub's own rules for repo names: letters, digits, "-", "_", "."; no "--" or ".."; at most 96 chars.
_REPO_PART_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
_REVISION_RE = re.compile(r"[0-9a-f]{40}")
# snapshot_download(local_dir=...) keeps its bookkeeping here; a repo file there would be overwritten.
_CLIENT_METADATA_DIR = (".cache", "huggingface")
_MAX_PATH_CHARS = 1024
_HASH_CHUNK_BYTES = 4 * 2**20
# How often the download's disk use is measured, and how long a cancelled download may take to stop.
_WATCH_INTERVAL_S = 1.0
_STOP_GRACE_S = 30.0
# A long download logs how far it got this often.
_PROGRESS_LOG_S = 15.0
# Room for the client's own bookkeeping files next to the downloaded bytes.
_OVERHEAD_BYTES_PER_FILE = 16 * 2**10
_OVERHEAD_BYTES = 2**20

_T = TypeVar("_T")
_log = logging.getLogger(__name__)
_slog = structlog.get_logger(__name__)


def default_hub_endpoint() -> str:
    """The hub the client talks to when no endpoint is configured (its default, or ``HF_ENDPOINT``)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


class RepoSource(Protocol):
    """Where a submission's files come from."""

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        """Put the repo's files at exactly ``submission.revision`` in a new folder under ``dest_root``.

        Returns that folder. Raises :class:`RepoInvalid` when the repo is the miner's fault (missing,
        too large, bad names) and :class:`InfrastructureError` when our side or the hub failed.
        """
        ...

    async def release(self, repo_dir: Path) -> None:
        """The caller is done with a folder ``fetch`` returned (a shared snapshot may be collected now)."""
        ...


@dataclass(frozen=True)
class _ExpectedFile:
    """One file as the hub lists it for the pinned revision."""

    path: str
    size: int
    blob_id: str | None
    sha256: str | None


class _DownloadAborted(Exception):
    """Raised inside the hub client's threads to stop a download we have given up on."""


def _guarded_progress_class(abort: threading.Event) -> type[hf_tqdm]:
    """A silent progress bar class whose ``update`` stops the download once ``abort`` is set.

    snapshot_download reports every received chunk through its progress bars, from its worker threads;
    raising there is the only way to stop those threads early, since a Python thread cannot be killed.
    """

    class _GuardedProgress(hf_tqdm):
        # tqdm starts a monitor thread per progress-bar class; a class is made per download, so without
        # this a long-running validator would gain one idle thread per fetch, forever.
        monitor_interval = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # no bars in a daemon's logs
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if abort.is_set():
                raise _DownloadAborted("download cancelled by the validator")
            return super().update(n)

    return _GuardedProgress


class HubRepoSource(RepoSource):
    """Downloads a submission's repo from a HuggingFace-compatible hub at its pinned revision."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        max_repo_bytes: int = DEFAULT_MAX_REPO_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    ) -> None:
        """``endpoint`` None means the client's default hub; ``timeout_s`` bounds one whole fetch."""
        if max_repo_bytes <= 0 or max_files <= 0 or timeout_s <= 0:
            raise ValueError("limits and timeout must be positive")
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        # False, not None: None would make the client look for a token in the environment and on disk.
        self._token: str | bool = token or False
        self._max_repo_bytes = max_repo_bytes
        self._max_files = max_files
        self._timeout_s = timeout_s

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        """See :meth:`RepoSource.fetch`. The result folder is named after the repo and revision."""
        repo_id, revision = _pinned_ref(submission)
        deadline = time.monotonic() + self._timeout_s
        expected = await self._listing(repo_id, revision, deadline)
        announced = sum(item.size for item in expected)

        dest_root = Path(dest_root)
        final_dir = dest_root / f"{repo_id.replace('/', '--')}--{revision}"
        staging = Path(await asyncio.to_thread(_make_staging, dest_root))
        try:
            local_dir = staging / "repo"
            abort = threading.Event()
            download = functools.partial(
                snapshot_download,
                repo_id,
                revision=revision,
                local_dir=local_dir,
                # A private cache: nothing from an earlier or foreign download can stand in for a file.
                cache_dir=staging / "cache",
                endpoint=self._endpoint,
                token=self._token,
                tqdm_class=_guarded_progress_class(abort),
            )
            await self._run(
                download,
                deadline,
                f"download of {repo_id}@{revision[:12]}",
                abort=abort,
                watch=(staging, announced + _OVERHEAD_BYTES + _OVERHEAD_BYTES_PER_FILE * len(expected)),
            )
            await asyncio.to_thread(_verify_and_place, local_dir, expected, final_dir)
        finally:
            await asyncio.to_thread(functools.partial(shutil.rmtree, staging, ignore_errors=True))
        return final_dir

    async def release(self, repo_dir: Path) -> None:
        """Nothing: the folder lies under the caller's ``dest_root``, which the caller removes."""

    async def _listing(self, repo_id: str, revision: str, deadline: float) -> list[_ExpectedFile]:
        api = HfApi(endpoint=self._endpoint, token=self._token)
        remaining = max(deadline - time.monotonic(), 0.001)
        call = functools.partial(
            api.model_info, repo_id, revision=revision, files_metadata=True, timeout=remaining
        )
        info = await self._run(call, deadline, f"listing of {repo_id}@{revision[:12]}")
        return _expected_files(info, repo_id, revision, self._max_repo_bytes, self._max_files)

    async def _run(
        self,
        call: Callable[[], _T],
        deadline: float,
        what: str,
        *,
        abort: threading.Event | None = None,
        watch: tuple[Path, int] | None = None,
    ) -> _T:
        """Run a blocking hub call in a thread under ``deadline``; map its failures to our errors.

        With ``watch=(folder, limit)`` the folder's size is measured while the call runs, so a hub that
        sends more than it announced is stopped instead of filling the disk.
        """
        task = asyncio.ensure_future(asyncio.to_thread(call))
        failure: EvaluationError
        started = last_report = time.monotonic()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    failure = InfrastructureError(f"{what}: not finished within {self._timeout_s:g} s")
                    break
                wait_s = min(remaining, _WATCH_INTERVAL_S) if watch else remaining
                done, _ = await asyncio.wait({task}, timeout=wait_s)
                if done:
                    try:
                        return task.result()
                    except Exception as exc:
                        raise _hub_error(exc, what) from exc
                if watch is not None:
                    used = await asyncio.to_thread(_tree_bytes, watch[0])
                    if time.monotonic() - last_report >= _PROGRESS_LOG_S:
                        last_report = time.monotonic()
                        _slog.info(
                            "download progress",
                            what=what,
                            received_bytes=used,
                            limit_bytes=watch[1],
                            elapsed_s=round(last_report - started),
                        )
                    if used > watch[1]:
                        failure = InfrastructureError(
                            f"{what}: hub sent {used} bytes, more than the {watch[1]} its listing announced"
                        )
                        break
        except asyncio.CancelledError:
            await _stop_thread(task, abort, what)
            raise
        await _stop_thread(task, abort, what)
        raise failure


async def _stop_thread(task: asyncio.Future[Any], abort: threading.Event | None, what: str) -> None:
    """Ask a worker thread to stop and wait a little for it, so it does not write into a removed folder."""
    if abort is not None:
        abort.set()
    done, _ = await asyncio.wait({task}, timeout=_STOP_GRACE_S)
    if done:
        if not task.cancelled():
            task.exception()  # retrieved: it is the abort we asked for, or moot now
        return
    # The thread is stuck in a blocking read; the client's own read timeouts end it eventually.
    _log.warning("%s: worker thread still running after %.0f s; leaving it behind", what, _STOP_GRACE_S)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _hub_error(exc: Exception, what: str) -> EvaluationError:
    """Sort a hub client failure into the miner's fault (RepoInvalid) or ours (InfrastructureError)."""
    if isinstance(exc, EvaluationError):
        return exc
    # GatedRepoError is a RepositoryNotFoundError: to an anonymous validator a gated repo is not there.
    if isinstance(exc, RepositoryNotFoundError):
        return RepoInvalid(f"{what}: repo not found on the hub (missing, private or gated)")
    if isinstance(exc, RevisionNotFoundError):
        return RepoInvalid(f"{what}: committed revision not found in the repo")
    if isinstance(exc, DisabledRepoError):
        return RepoInvalid(f"{what}: repo is disabled on the hub")
    # Everything else (connection errors, timeouts, 5xx, 429, short reads, disk errors) is worth a retry.
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return InfrastructureError(f"{what} failed: {type(exc).__name__}: {first_line}"[:500])


def _pinned_ref(submission: Submission) -> tuple[str, str]:
    """The submission's repo id and revision, validated before they reach a URL or a folder name."""
    parts = submission.repo_id.split("/")
    if len(parts) != 2 or not all(
        _REPO_PART_RE.fullmatch(p) and ".." not in p and "--" not in p for p in parts
    ):
        raise RepoInvalid(f"invalid repo id {submission.repo_id!r}: expected 'namespace/name'")
    if not _REVISION_RE.fullmatch(submission.revision):
        raise RepoInvalid(
            f"invalid revision {submission.revision!r}: expected a 40-digit lowercase commit hash"
        )
    return submission.repo_id, submission.revision


def _check_repo_path(name: object) -> str:
    """A hub file name we are willing to create: relative, plain components, nowhere special."""
    name = _check_name(name)
    if tuple(name.split("/")[: len(_CLIENT_METADATA_DIR)]) == _CLIENT_METADATA_DIR:
        raise RepoInvalid(f"file name uses a reserved folder: {name!r}")
    return name


def _check_name(name: object) -> str:
    """Relative, at most 1024 characters, no control characters or backslashes, plain components."""
    if not isinstance(name, str) or not name or len(name) > _MAX_PATH_CHARS:
        raise RepoInvalid(f"invalid file name in repo listing: {name!r}")
    if name.startswith("/") or "\\" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise RepoInvalid(f"invalid file name in repo listing: {name!r}")
    parts = name.split("/")
    if any(part in ("", ".", "..", ".git") for part in parts):
        raise RepoInvalid(f"invalid file name in repo listing: {name!r}")
    return name


def _expected_files(
    info: ModelInfo, repo_id: str, revision: str, max_bytes: int, max_files: int
) -> list[_ExpectedFile]:
    """Check the hub's listing against the pinned revision and the limits; nothing is downloaded yet."""
    if info.sha != revision:
        raise RepoInvalid(f"hub resolved {repo_id}@{revision} to a different commit ({info.sha!r})")
    if info.siblings is None:
        raise InfrastructureError(f"hub listing of {repo_id}@{revision[:12]} has no files section")
    if len(info.siblings) > max_files:
        raise RepoInvalid(f"repo has {len(info.siblings)} files; the limit is {max_files}")
    files: list[_ExpectedFile] = []
    total = 0
    for sibling in info.siblings:
        if sibling.size is None:
            raise InfrastructureError(f"hub listing gives no size for {sibling.rfilename!r}")
        size = max(sibling.size, sibling.lfs.size if sibling.lfs else 0)
        total += size
        files.append(
            _ExpectedFile(
                path=sibling.rfilename,
                size=size,
                blob_id=None if sibling.lfs else sibling.blob_id,
                sha256=sibling.lfs.sha256 if sibling.lfs else None,
            )
        )
    if total > max_bytes:
        raise RepoInvalid(
            f"repo is {total} bytes ({total / 2**30:.2f} GiB); the limit is {max_bytes} bytes"
            f" ({max_bytes / 2**30:.2f} GiB)"
        )
    seen: set[str] = set()
    for item in files:
        _check_repo_path(item.path)
        if item.path in seen:
            raise RepoInvalid(f"file listed twice in repo: {item.path!r}")
        seen.add(item.path)
    return files


def _make_staging(dest_root: Path) -> str:
    dest_root.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=".fetch-", dir=dest_root)


def _tree_bytes(folder: Path) -> int:
    """Bytes of regular files under ``folder``; files vanishing mid-walk are skipped."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _digests(path: Path, size: int) -> tuple[str, str]:
    """Git blob id and sha256 of a file, read once."""
    git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            git.update(chunk)
            sha256.update(chunk)
    return git.hexdigest(), sha256.hexdigest()


def _verify_and_place(local_dir: Path, expected: list[_ExpectedFile], final_dir: Path) -> None:
    """Check the download holds exactly the listed files with the listed digests, then move it in place.

    The digests come from the listing of the pinned commit, so this ties the bytes to the revision even
    if the transfer or a cache in between went wrong.
    """
    shutil.rmtree(local_dir.joinpath(*_CLIENT_METADATA_DIR), ignore_errors=True)
    with contextlib.suppress(OSError):
        local_dir.joinpath(_CLIENT_METADATA_DIR[0]).rmdir()  # only if the repo left nothing else there
    if not expected:
        local_dir.mkdir(parents=True, exist_ok=True)
    found = _regular_files(local_dir)
    wanted = {item.path: item for item in expected}
    if set(found) != set(wanted):
        missing = sorted(set(wanted) - set(found))[:5]
        extra = sorted(set(found) - set(wanted))[:5]
        raise InfrastructureError(
            f"download does not match the listing: missing {missing}, unexpected {extra}"
        )
    for rel, item in wanted.items():
        path = local_dir / rel
        size = found[rel]
        if size != item.size:
            raise InfrastructureError(f"downloaded {rel} has {size} bytes, listing says {item.size}")
        if item.blob_id is None and item.sha256 is None:
            continue
        blob_id, sha256 = _digests(path, size)
        if (item.sha256 is not None and sha256 != item.sha256) or (
            item.sha256 is None and item.blob_id is not None and blob_id != item.blob_id
        ):
            raise InfrastructureError(f"downloaded {rel} does not match the digest in the hub's listing")
    if final_dir.exists() or final_dir.is_symlink():
        shutil.rmtree(final_dir)
    local_dir.rename(final_dir)


def _regular_files(folder: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every file under ``folder``; anything but plain files is an error."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            full = base / name
            st = full.lstat()
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise InfrastructureError(f"download produced a non-regular file: {full.relative_to(folder)}")
            found[full.relative_to(folder).as_posix()] = st.st_size
    return found


class LocalDirSource(RepoSource):
    """A folder on this machine, for miners evaluating their repo before they publish and commit it.

    The folder is copied (``.git`` left out, symlinks kept as links so :func:`check_repo` judges them),
    under the same size and file-count limits as the hub source; the submission's revision is ignored.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_repo_bytes: int = DEFAULT_MAX_REPO_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> None:
        """``path`` is the miner's repo folder."""
        self._path = Path(path)
        self._max_repo_bytes = max_repo_bytes
        self._max_files = max_files

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        """Copy the folder into a new folder under ``dest_root`` and return it."""
        return await asyncio.to_thread(self._copy, Path(dest_root))

    async def release(self, repo_dir: Path) -> None:
        """Nothing: the copy lies under the caller's ``dest_root``, which the caller removes."""

    def _copy(self, dest_root: Path) -> Path:
        entries = scan_local(self._path, self._max_repo_bytes, self._max_files)
        dest_root.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix="local-", dir=dest_root))
        try:
            for rel, kind in entries:
                src, dst = self._path / rel, target / rel
                if kind == "dir":
                    dst.mkdir()
                elif kind == "link":
                    os.symlink(os.readlink(src), dst)
                else:
                    shutil.copyfile(src, dst, follow_symlinks=False)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target


def scan_local(root: Path, max_bytes: int, max_files: int) -> list[tuple[str, str]]:
    """(relative path, "dir" | "file" | "link") for everything to copy, parents first; enforces limits.

    ``.git`` is left out, special files are refused. Stops as soon as a limit is passed, so pointing it
    at a huge folder costs little.
    """
    if not root.is_dir():
        raise RepoInvalid(f"not a folder: {root}")
    entries: list[tuple[str, str]] = []
    files = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in [*dirnames, *sorted(f for f in filenames if f != ".git")]:
            full = base / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, "link"))
                files += 1
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, "dir"))
            elif stat.S_ISREG(st.st_mode):
                entries.append((rel, "file"))
                files += 1
                total += st.st_size
            else:
                # A FIFO would block the copy forever; devices and sockets have no place in a repo.
                raise RepoInvalid(f"special file in repo: {rel}")
            if files > max_files:
                raise RepoInvalid(f"repo has more than {max_files} files")
            if total > max_bytes:
                raise RepoInvalid(f"repo is more than {max_bytes} bytes ({max_bytes / 2**30:.2f} GiB)")
    return entries


def check_repo(repo_dir: Path, expected_hotkey: str | None) -> None:
    """Check a fetched repo's layout before anything is built; raises RepoInvalid with the reason.

    Requires the files in :data:`REQUIRED_FILES` as regular files at the top level, a ``hotkey.txt``
    smaller than 1 kB in UTF-8 whose stripped content equals ``expected_hotkey`` (when given), and no
    symlink that leads outside the repo nor any special file. Blocking: run it in a thread.
    """
    check_layout(repo_dir)
    check_hotkey(repo_dir, expected_hotkey)
    _check_tree(repo_dir)


def check_layout(repo_dir: Path) -> None:
    """The files in :data:`REQUIRED_FILES` exist at the top level as regular files; RepoInvalid if not."""
    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise RepoInvalid(f"repo folder missing: {repo_dir}")
    missing = [name for name in REQUIRED_FILES if not os.path.lexists(repo_dir / name)]
    if missing:
        raise RepoInvalid(f"missing required file(s): {', '.join(missing)}")
    for name in REQUIRED_FILES:
        mode = (repo_dir / name).lstat().st_mode
        if not stat.S_ISREG(mode):
            raise RepoInvalid(f"{name} must be a regular file, not a symlink or folder")


def check_hotkey(repo_dir: Path, expected_hotkey: str | None) -> str:
    """The hotkey ``hotkey.txt`` names (stripped); RepoInvalid when it is unreadable, empty, too large,
    or differs from ``expected_hotkey`` (not compared when None). Needs :func:`check_layout` first."""
    path = Path(repo_dir) / HOTKEY_FILE
    size = path.lstat().st_size
    if size >= HOTKEY_MAX_BYTES:
        raise RepoInvalid(f"{HOTKEY_FILE} is {size} bytes; it must be smaller than {HOTKEY_MAX_BYTES}")
    raw = path.read_bytes()[:HOTKEY_MAX_BYTES]
    try:
        # utf-8-sig: a byte-order mark from a Windows editor is not part of the key.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RepoInvalid(f"{HOTKEY_FILE} is not valid UTF-8") from exc
    hotkey = text.strip()
    if not hotkey:
        raise RepoInvalid(f"{HOTKEY_FILE} is empty")
    if expected_hotkey is not None and hotkey != expected_hotkey.strip():
        raise RepoInvalid(
            f"{HOTKEY_FILE} names {hotkey[:64]!r}, but the submission comes from {expected_hotkey[:64]!r}"
        )
    return hotkey


def _check_tree(repo_dir: Path) -> None:
    """No symlink may resolve outside the repo, and no special file may exist anywhere in it."""
    real_root = os.path.realpath(repo_dir)
    for dirpath, dirnames, filenames in os.walk(repo_dir, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            full = base / name
            rel = full.relative_to(repo_dir).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                _check_link(real_root, full, rel)
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise RepoInvalid(f"special file in repo: {rel}")


def _check_link(real_root: str, full: Path, rel: str) -> None:
    target = os.path.realpath(full)
    if os.path.commonpath([real_root, target]) != real_root:
        raise RepoInvalid(f"symlink {rel} points outside the repo")


def check_entries(repo_dir: Path, entries: list[tuple[str, str]]) -> None:
    """Every path of :func:`scan_local`'s ``entries`` is a name the hub accepts and no symlink leads
    outside the repo; RepoInvalid naming the first that fails.

    The hub client's own bookkeeping folder is not refused here: uploading a folder leaves it out.
    """
    real_root = os.path.realpath(repo_dir)
    for rel, kind in entries:
        _check_name(rel)
        if kind == "link":
            _check_link(real_root, Path(repo_dir) / rel, rel)
