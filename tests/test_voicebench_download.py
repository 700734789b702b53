"""download_voicebench end to end: the real huggingface_hub client against a LocalHub dataset repo.

The espeak-ng fixture (hub parquet layout) is published as dataset ``hlt-lab/voicebench`` on a LocalHub
listening on 127.0.0.1; nothing in huggingface_hub is patched, so these tests exercise the URLs, headers
and error mapping the validator relies on against the real hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from evaluation.errors import InfrastructureError
from evaluation.localhub import LocalHub, publish
from evaluation.voicebench.dataset import Item, load_spec
from evaluation.voicebench.fixture import build_fixture, parquet_name
from evaluation.voicebench.hub import DEFAULT_REPO_ID, download_voicebench
from evaluation.voicebench.subsets import SUBSETS, SubsetSpec

FIXTURE_SUBSETS = ("openbookqa", "sd-qa", "mmsu")
# Generous for a loopback download of a few small files; a hang fails the test instead of blocking CI.
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subsets of the espeak-ng fixture (sd-qa: usa and gbr; mmsu: a few subjects)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng to synthesize the VoiceBench fixture (apt-get install espeak-ng)")
    return build_fixture(tmp_path_factory.mktemp("voicebench-src"), subsets=FIXTURE_SUBSETS)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-cache")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def revision(store: Path, fixture_dir: Path) -> str:
    return publish(store, DEFAULT_REPO_ID, fixture_dir, repo_type="dataset")


@pytest.fixture
async def hub(store: Path, revision: str) -> AsyncIterator[LocalHub]:
    server = LocalHub(store)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def present_splits(root: Path, subset: str) -> tuple[str, ...]:
    """Splits the fixture has for ``subset``, from its parquet file names."""
    return tuple(sorted(p.name.split("-", 1)[0] for p in (root / subset).glob("*.parquet")))


def fixture_specs(root: Path) -> list[SubsetSpec]:
    """openbookqa and sd-qa as in SUBSETS; mmsu narrowed to the subjects the fixture has (the real
    config has twelve, and asking for a subject the repo lacks is an error, tested below)."""
    mmsu = present_splits(root, "mmsu")
    return [
        SUBSETS["openbookqa"],
        SUBSETS["sd-qa"],
        dataclasses.replace(SUBSETS["mmsu"], splits=mmsu, all_splits=mmsu),
    ]


def downloaded(dest: Path) -> set[str]:
    """Files under ``dest`` other than the client's own ``.cache`` bookkeeping."""
    return {
        p.relative_to(dest).as_posix()
        for p in dest.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(dest).parts
    }


def expected_files(specs: Sequence[SubsetSpec], all_regions: bool) -> set[str]:
    return {
        f"{spec.name}/{parquet_name(split)}"
        for spec in specs
        for split in (spec.all_splits if all_regions else spec.splits)
    }


def summary(items: Sequence[Item]) -> list[tuple[str, str, str | None, str | None]]:
    """What identifies and judges an item (audio is compared separately)."""
    return [(i.item_id, i.prompt, i.reference, i.extra.get("split")) for i in items]


async def download(
    hub: LocalHub, dest: Path, revision: str, specs: Sequence[SubsetSpec], **kwargs: object
) -> Path:
    """download_voicebench blocks, so it runs in a thread while the hub serves on this loop."""
    return await asyncio.to_thread(
        download_voicebench,
        dest,
        endpoint=hub.endpoint,
        revision=revision,
        subsets=specs,
        timeout_s=TIMEOUT_S,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_download_loads_the_same_items_as_the_fixture(
    hub: LocalHub, revision: str, fixture_dir: Path, hf_cache: Path, tmp_path: Path
) -> None:
    specs = fixture_specs(fixture_dir)
    dest = tmp_path / "dest"
    assert await download(hub, dest, revision, specs, all_regions=False) == dest

    # Only the evaluated splits' parquet files: no sd-qa gbr, no fixture manifests.
    assert downloaded(dest) == expected_files(specs, all_regions=False)
    assert "sd-qa/" + parquet_name("gbr") not in downloaded(dest)
    assert (fixture_dir / "sd-qa" / parquet_name("gbr")).is_file()  # it was there to be skipped

    for spec in specs:
        got = await asyncio.to_thread(load_spec, dest, spec, cache_dir=hf_cache)
        want = await asyncio.to_thread(load_spec, fixture_dir, spec, cache_dir=hf_cache)
        assert got and summary(got) == summary(want), spec.name
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a.audio, b.audio), a.item_id


async def test_all_regions_downloads_every_split(
    hub: LocalHub, revision: str, fixture_dir: Path, hf_cache: Path, tmp_path: Path
) -> None:
    # sd-qa narrowed to the regions the fixture has: all eleven would be missing files (an error).
    regions = present_splits(fixture_dir, "sd-qa")
    assert "gbr" in regions and "usa" in regions
    sd_qa = dataclasses.replace(SUBSETS["sd-qa"], all_splits=regions)
    dest = tmp_path / "dest"
    await download(hub, dest, revision, [sd_qa], all_regions=True)
    assert downloaded(dest) == {f"sd-qa/{parquet_name(r)}" for r in regions}
    pooled = await asyncio.to_thread(load_spec, dest, sd_qa, list(regions), cache_dir=hf_cache)
    direct = await asyncio.to_thread(load_spec, fixture_dir, sd_qa, list(regions), cache_dir=hf_cache)
    assert summary(pooled) == summary(direct)
    assert {item.extra["split"] for item in pooled} == set(regions)


async def test_second_download_fetches_nothing_new(hub: LocalHub, revision: str, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    specs = [SUBSETS["openbookqa"]]
    await download(hub, dest, revision, specs)
    first = hub.requests["resolve"]
    await download(hub, dest, revision, specs)
    # Files already in dest with the right content are not downloaded again (HEADs are allowed, but no
    # more requests than the first run, which had to GET every file).
    assert hub.requests["resolve"] - first <= first
    assert downloaded(dest) == expected_files(specs, all_regions=False)


async def test_unknown_revision_or_repo_is_an_infrastructure_error(
    hub: LocalHub, revision: str, tmp_path: Path
) -> None:
    specs = [SUBSETS["openbookqa"]]
    with pytest.raises(InfrastructureError, match="revision"):
        await download(hub, tmp_path / "a", "f" * 40, specs)
    with pytest.raises(InfrastructureError, match="revision"):
        await download(hub, tmp_path / "b", "no-such-branch", specs)
    with pytest.raises(InfrastructureError, match="repo hlt-lab/missing not found"):
        await asyncio.to_thread(
            download_voicebench,
            tmp_path / "c",
            repo_id="hlt-lab/missing",
            endpoint=hub.endpoint,
            revision=revision,
            subsets=specs,
            timeout_s=TIMEOUT_S,
        )
    # Nothing was written for the failed attempts.
    for name in ("a", "b", "c"):
        assert downloaded(tmp_path / name) == set()


async def test_split_missing_from_the_repo_is_an_infrastructure_error(
    hub: LocalHub, revision: str, fixture_dir: Path, tmp_path: Path
) -> None:
    # The real mmsu config has twelve subjects; the published fixture only a few.
    assert len(present_splits(fixture_dir, "mmsu")) < len(SUBSETS["mmsu"].splits)
    with pytest.raises(InfrastructureError, match="no files for"):
        await download(hub, tmp_path / "dest", revision, [SUBSETS["mmsu"]])
