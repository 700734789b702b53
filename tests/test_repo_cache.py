"""Snapshot cache: real huggingface_hub downloads from a hub on 127.0.0.1, real files on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evaluation.fetch import HubRepoSource
from evaluation.localhub import LocalHub, publish
from evaluation.repo_cache import COMPLETE_MARKER, CachedRepoSource, collect_garbage
from evaluation.types import Submission


def make_repo(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True)
    for name in ("Dockerfile", "server.py", "inference.py", "requirements.txt"):
        (folder / name).write_text(f"# {name}\n")
    (folder / "hotkey.txt").write_text("5Hot\n")
    (folder / "model.bin").write_bytes(payload)
    return folder


async def test_second_fetch_of_a_revision_comes_from_the_cache(tmp_path: Path) -> None:
    revision = publish(tmp_path / "hub", "ns/model", make_repo(tmp_path / "src", b"x" * 1000))
    hub = LocalHub(tmp_path / "hub")
    async with hub as url:
        source = CachedRepoSource(HubRepoSource(endpoint=url), tmp_path / "cache", budget_bytes=10**6)
        sub = Submission(uid=1, hotkey="5Hot", repo_id="ns/model", revision=revision)
        first = await source.fetch(sub, tmp_path / "scratch")
        served = sum(hub.requests.values())
        second = await source.fetch(sub, tmp_path / "scratch")
        assert second == first and (first / "model.bin").read_bytes() == b"x" * 1000
        assert sum(hub.requests.values()) == served  # nothing asked of the hub the second time


def snapshot(cache: Path, name: str, size: int, age_s: float) -> None:
    folder = cache / name
    folder.mkdir(parents=True)
    (folder / "blob").write_bytes(b"\0" * size)
    marker = folder / COMPLETE_MARKER
    marker.touch()
    when = marker.stat().st_mtime - age_s
    os.utime(marker, (when, when))


def test_garbage_collection_drops_least_recently_used_first(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    snapshot(cache, "old", 400, age_s=300)
    snapshot(cache, "mid", 400, age_s=200)
    snapshot(cache, "new", 400, age_s=100)
    removed = collect_garbage(cache, budget_bytes=900)
    assert removed == ["old"]
    assert sorted(p.name for p in cache.iterdir()) == ["mid", "new"]


def test_garbage_collection_never_drops_the_kept_snapshot(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    snapshot(cache, "huge-just-fetched", 5000, age_s=1000)
    snapshot(cache, "other", 10, age_s=10)
    assert collect_garbage(cache, budget_bytes=100, keep={"huge-just-fetched"}) == ["other"]
    assert (cache / "huge-just-fetched").is_dir()


def test_incomplete_snapshots_are_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "half-written").mkdir(parents=True)
    (cache / "half-written" / "part").write_bytes(b"1")
    assert collect_garbage(cache, budget_bytes=10**9) == ["half-written"]


def test_budget_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="budget"):
        CachedRepoSource(HubRepoSource(), tmp_path, budget_bytes=0)


async def test_a_snapshot_in_use_survives_other_fetches_until_it_is_released(tmp_path: Path) -> None:
    """An attacker fetching large revisions must not delete the snapshot a victim is building from."""
    hub_root = tmp_path / "hub"
    victim_rev = publish(hub_root, "victim/model", make_repo(tmp_path / "victim", b"v" * 4000))
    big = [
        publish(hub_root, f"big/m{i}", make_repo(tmp_path / f"big{i}", os.urandom(6000))) for i in range(3)
    ]
    async with LocalHub(hub_root) as url:
        source = CachedRepoSource(HubRepoSource(endpoint=url), tmp_path / "cache", budget_bytes=8000)
        victim = await source.fetch(Submission(1, "5V", "victim/model", victim_rev), tmp_path / "s")
        for i, revision in enumerate(big):
            folder = await source.fetch(Submission(2, "5A", f"big/m{i}", revision), tmp_path / "s")
            await source.release(folder)
        # Over budget the whole time, yet the leased snapshot is whole.
        assert (victim / "model.bin").read_bytes() == b"v" * 4000 and (victim / COMPLETE_MARKER).is_file()
        await source.release(victim)
        last = await source.fetch(Submission(2, "5A", "big/m0", big[0]), tmp_path / "s")
        await source.release(last)
        assert not victim.exists()  # released: the least recently used, collected at the next fetch
