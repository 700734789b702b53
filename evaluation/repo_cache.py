"""Snapshots of miner repos kept by revision, under a disk budget.

A revision is immutable, so a snapshot fetched once (and verified against the hub's digests by the inner
source) serves every later evaluation of it: a retry after an infrastructure failure, a re-evaluation, a
restart. The least recently used snapshots are deleted when the cache grows past its budget, except
the ones in use: each ``fetch`` leases its snapshot until ``release``, so fetching large revisions
(an attacker's, say) can never delete the snapshot another evaluation is still building from.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import structlog

from evaluation.fetch import RepoSource
from evaluation.types import Submission

log = structlog.get_logger(__name__)

COMPLETE_MARKER = ".voice-validator-complete"


class CachedRepoSource:
    """A :class:`RepoSource` that keeps what another source fetched, keyed by repo and revision.

    Callers must treat the returned folder as read-only: it is shared by every evaluation of that
    revision. Only sources whose content is fixed by the revision (the hub) belong behind this cache.
    """

    def __init__(self, inner: RepoSource, cache_dir: Path, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ValueError("the cache budget must be positive")
        self._inner = inner
        self._dir = cache_dir
        self._budget = budget_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        # Snapshot name -> evaluations holding it (leased by fetch, given back by release), plus the
        # snapshots being fetched right now: garbage collection never deletes either.
        self._leases: Counter[str] = Counter()

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        """The cached snapshot of ``submission``'s revision, fetching it first when missing.

        The snapshot is leased to the caller until :meth:`release`.
        """
        key = f"{submission.repo_id.replace('/', '--')}--{submission.revision}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._leases[key] += 1
        try:
            async with lock:
                return await self._fetch_locked(submission, key)
        except BaseException:
            self._give_back(key)
            raise

    async def _fetch_locked(self, submission: Submission, key: str) -> Path:
        cached = self._dir / key
        if (cached / COMPLETE_MARKER).is_file():
            await asyncio.to_thread(os.utime, cached / COMPLETE_MARKER)
            log.debug("repo snapshot from cache", key=key)
            return cached
        staging = self._dir / ".staging"
        await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
        fetched = await self._inner.fetch(submission, staging)
        await asyncio.to_thread(_install, fetched, cached)
        removed = await asyncio.to_thread(
            collect_garbage, self._dir, self._budget, keep=frozenset(self._leases)
        )
        if removed:
            log.info("repo cache trimmed", removed=removed, budget_bytes=self._budget)
        return cached

    async def release(self, repo_dir: Path) -> None:
        """Give back the lease ``fetch`` took on ``repo_dir``'s snapshot."""
        self._give_back(Path(repo_dir).name)

    def _give_back(self, key: str) -> None:
        self._leases[key] -= 1
        if self._leases[key] <= 0:
            del self._leases[key]


def _install(fetched: Path, cached: Path) -> None:
    """Move a fresh snapshot into place, then mark it complete (a crash in between leaves no marker)."""
    if cached.exists():
        shutil.rmtree(cached)
    fetched.rename(cached)
    (cached / COMPLETE_MARKER).touch()


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def collect_garbage(cache_dir: Path, budget_bytes: int, keep: Collection[str] = ()) -> list[str]:
    """Delete incomplete snapshots, then the least recently used ones until the cache fits the budget.

    ``keep`` names snapshots that are never deleted, complete or not (in use, or being fetched).
    Returns the deleted names.
    """
    removed: list[str] = []
    entries: list[tuple[float, str, int]] = []
    kept_bytes = 0
    for entry in cache_dir.iterdir() if cache_dir.is_dir() else ():
        if entry.name == ".staging" or not entry.is_dir():
            continue
        marker = entry / COMPLETE_MARKER
        if entry.name in keep:
            kept_bytes += _size(entry)  # counts against the budget, but is never a candidate
            continue
        if not marker.is_file():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
            continue
        entries.append((marker.stat().st_mtime, entry.name, _size(entry)))
    total = kept_bytes + sum(size for _, _, size in entries)
    for _, name, size in sorted(entries):
        if total <= budget_bytes:
            break
        shutil.rmtree(cache_dir / name, ignore_errors=True)
        removed.append(name)
        total -= size
    staging = cache_dir / ".staging"
    if staging.is_dir():
        # Leftovers of fetches that died with the process; a live fetch holds its own fresh folder.
        for leftover in staging.iterdir():
            if time.time() - leftover.stat().st_mtime > 24 * 3600:
                shutil.rmtree(leftover, ignore_errors=True)
    return removed
