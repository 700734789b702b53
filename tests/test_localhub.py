"""LocalHub against the real huggingface_hub client, plus raw HTTP requests that try to escape the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from evaluation.localhub import HubPathError, LocalHub, publish

REPO = "alice/voice"
LFS_THRESHOLD = 1000
SECRET = b"TOP-SECRET-MARKER"
README = b"hello\n"
WEIGHTS = b"\x01" * 4096


def make_source(folder: Path, *, weights: bytes = b"\x01" * 4096, readme: str = "hello\n") -> Path:
    """A tiny repo: two small files, one nested file, one file large enough to count as LFS."""
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "README.md").write_text(readme)
    (folder / "config.json").write_text('{"a": 1}\n')
    (folder / "sub" / "deeper" / "note.txt").write_text("nested\n")
    (folder / "sub" / "model.bin").write_bytes(weights)
    return folder


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def revision(store: Path, tmp_path: Path) -> str:
    return publish(store, REPO, make_source(tmp_path / "src"))


@pytest.fixture
async def hub(store: Path, revision: str) -> AsyncIterator[LocalHub]:
    server = LocalHub(store, lfs_threshold=LFS_THRESHOLD)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- publish ---------------------------------------------------------------------------------------


def test_publish_same_content_same_revision(tmp_path: Path, store: Path) -> None:
    first = publish(store, REPO, make_source(tmp_path / "a"))
    copy = make_source(tmp_path / "b")
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # not part of the content
    assert publish(store, REPO, copy) == first
    assert len(first) == 40 and all(c in "0123456789abcdef" for c in first)
    assert files_of(store / REPO / first) == files_of(tmp_path / "a")
    assert not (store / REPO / first / ".git").exists()


def test_publish_new_content_moves_main_and_keeps_old_revision(tmp_path: Path, store: Path) -> None:
    old = publish(store, REPO, make_source(tmp_path / "a"))
    new = publish(store, REPO, make_source(tmp_path / "b", readme="changed\n"))
    assert new != old
    assert json.loads((store / REPO / "refs.json").read_text()) == {"main": new}
    assert (store / REPO / old / "README.md").read_text() == "hello\n"
    # Renaming a file changes the revision even though the bytes are the same.
    renamed = make_source(tmp_path / "c")
    (renamed / "README.md").rename(renamed / "README.txt")
    assert publish(store, REPO, renamed) not in (old, new)


def test_publish_refuses_bad_input(tmp_path: Path, store: Path) -> None:
    src = make_source(tmp_path / "src")
    for bad in ("noslash", "a/b/c", "../x", "ns/..", "ns/.hidden", "", "ns/"):
        with pytest.raises(HubPathError):
            publish(store, bad, src)
    (src / "link").symlink_to(src / "README.md")
    with pytest.raises(ValueError, match="regular files"):
        publish(store, REPO, src)


# -- the real client against the server ------------------------------------------------------------


async def test_model_info_lists_files_with_digests(hub: LocalHub, revision: str, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    info = await asyncio.to_thread(api.model_info, REPO, revision=revision, files_metadata=True, timeout=10)
    assert info.id == REPO
    assert info.sha == revision
    assert info.siblings is not None
    siblings = {s.rfilename: s for s in info.siblings}
    source = files_of(tmp_path / "src")
    assert set(siblings) == set(source)
    for name, data in source.items():
        assert siblings[name].size == len(data)
        assert siblings[name].blob_id == git_blob_id(data)
    lfs = siblings["sub/model.bin"].lfs
    assert lfs is not None
    assert lfs.sha256 == hashlib.sha256(source["sub/model.bin"]).hexdigest()
    assert lfs.size == 4096
    # "version <spec url>\n" + "oid sha256:<64 hex>\n" + "size 4096\n"
    assert lfs.pointer_size == 43 + 76 + len("size 4096\n")
    assert siblings["README.md"].lfs is None


async def test_branch_name_resolves_to_latest(hub: LocalHub, store: Path, tmp_path: Path) -> None:
    newer = await asyncio.to_thread(publish, store, REPO, make_source(tmp_path / "v2", readme="v2\n"))
    api = HfApi(endpoint=hub.endpoint, token=False)
    info = await asyncio.to_thread(api.model_info, REPO, timeout=10)
    assert info.sha == newer
    info = await asyncio.to_thread(api.model_info, REPO, revision="main", timeout=10)
    assert info.sha == newer


async def test_snapshot_download_at_pinned_revision(hub: LocalHub, revision: str, tmp_path: Path) -> None:
    out = await asyncio.to_thread(
        snapshot_download,
        REPO,
        revision=revision,
        local_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        endpoint=hub.endpoint,
        token=False,
    )
    assert files_of(Path(out)) == files_of(tmp_path / "src")
    assert hub.requests["tree"] >= 1
    assert hub.requests["resolve"] >= len(files_of(tmp_path / "src"))


async def test_tree_listing(hub: LocalHub, revision: str) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)

    def listing(path: str | None, recursive: bool) -> dict[str, object]:
        entries = api.list_repo_tree(REPO, path_in_repo=path, revision=revision, recursive=recursive)
        return {e.path: e for e in entries}

    top = await asyncio.to_thread(listing, None, False)
    assert set(top) == {"README.md", "config.json", "sub"}
    assert isinstance(top["sub"], RepoFolder)
    assert isinstance(top["README.md"], RepoFile)

    sub = await asyncio.to_thread(listing, "sub", False)
    assert set(sub) == {"sub/deeper", "sub/model.bin"}
    model = sub["sub/model.bin"]
    assert isinstance(model, RepoFile) and model.lfs is not None and model.size == 4096

    nested = await asyncio.to_thread(listing, "sub/deeper", True)
    assert set(nested) == {"sub/deeper/note.txt"}

    everything = await asyncio.to_thread(listing, None, True)
    assert set(everything) == {
        "README.md",
        "config.json",
        "sub",
        "sub/deeper",
        "sub/deeper/note.txt",
        "sub/model.bin",
    }


async def test_resolve_headers_and_body(hub: LocalHub, revision: str) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{hub.endpoint}/{REPO}/resolve/{revision}/README.md"
        async with session.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["X-Repo-Commit"] == revision
            assert resp.headers["ETag"] == f'"{git_blob_id(README)}"'
            assert resp.headers["Content-Length"] == "6"
        async with session.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == b"hello\n"
        # LFS files carry the sha256 as their ETag; a branch name resolves to its commit.
        async with session.head(f"{hub.endpoint}/{REPO}/resolve/main/sub/model.bin") as resp:
            assert resp.status == 200
            assert resp.headers["X-Repo-Commit"] == revision
            assert resp.headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
            assert resp.headers["Content-Length"] == "4096"
        async with session.post(url) as resp:
            assert resp.status == 405


async def test_not_found_errors_map_to_client_exceptions(
    hub: LocalHub, revision: str, tmp_path: Path
) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        await asyncio.to_thread(api.model_info, "alice/missing", revision=revision, timeout=10)
    with pytest.raises(RepositoryNotFoundError):
        await asyncio.to_thread(api.model_info, "nobody/voice", timeout=10)
    with pytest.raises(RevisionNotFoundError):
        await asyncio.to_thread(api.model_info, REPO, revision="f" * 40, timeout=10)
    with pytest.raises(RevisionNotFoundError):
        await asyncio.to_thread(api.model_info, REPO, revision="no-such-branch", timeout=10)
    with pytest.raises(RemoteEntryNotFoundError):
        await asyncio.to_thread(
            hf_hub_download,
            REPO,
            "missing.txt",
            revision=revision,
            local_dir=tmp_path / "out",
            endpoint=hub.endpoint,
            token=False,
        )
    with pytest.raises(RemoteEntryNotFoundError):
        await asyncio.to_thread(
            lambda: list(api.list_repo_tree(REPO, path_in_repo="nope", revision=revision))
        )


async def test_context_manager_yields_endpoint_and_stops(store: Path, revision: str) -> None:
    hub = LocalHub(store)
    async with hub as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
        assert hub.endpoint == endpoint
    with pytest.raises(RuntimeError):
        _ = hub.endpoint
    host, port = endpoint.removeprefix("http://").split(":")
    with pytest.raises(OSError):
        async with asyncio.timeout(5):
            await asyncio.open_connection(host, int(port))


async def test_refuses_non_loopback_address(store: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await LocalHub(store).start(host="0.0.0.0")


# -- traversal -------------------------------------------------------------------------------------


async def raw_get(endpoint: str, target: str) -> tuple[int, bytes]:
    """Send the request target byte for byte, so no client library normalises it first."""
    host, port = endpoint.removeprefix("http://").split(":")
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    status = int(response.split(b" ", 2)[1])
    return status, response


async def test_traversal_attempts_never_leave_the_revision(
    hub: LocalHub, store: Path, revision: str, tmp_path: Path
) -> None:
    # Secrets next to the store, inside the store but outside any revision, and behind a planted symlink.
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (store / "alice" / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", store / REPO / revision / "planted.txt")
    rev = revision
    targets = [
        f"/{REPO}/resolve/{rev}/../../secret.txt",
        f"/{REPO}/resolve/{rev}/..%2f..%2fsecret.txt",
        f"/{REPO}/resolve/{rev}/..%2F..%2F..%2F..%2Fsecret.txt",
        f"/{REPO}/resolve/{rev}/%2e%2e/%2e%2e/secret.txt",
        f"/{REPO}/resolve/{rev}/%2E%2E%2F%2E%2E%2Fsecret.txt",
        f"/{REPO}/resolve/{rev}/sub/..%2f..%2f..%2fsecret.txt",
        f"/{REPO}/resolve/{rev}/..%5c..%5csecret.txt",
        f"/{REPO}/resolve/{rev}/%252e%252e/%252e%252esecret.txt",
        f"/{REPO}/resolve/{rev}/%2F{tmp_path.as_posix().lstrip('/')}/secret.txt",
        f"/{REPO}/resolve/{rev}//{tmp_path.as_posix().lstrip('/')}/secret.txt",
        f"/{REPO}/resolve/{rev}/{tmp_path.as_posix().replace('/', '%2F')}%2Fsecret.txt",
        f"/{REPO}/resolve/{rev}/planted.txt",
        f"/{REPO}/resolve/{rev}/%00secret.txt",
        f"/{REPO}/resolve/..%2f..%2f/secret.txt",
        f"/{REPO}/resolve/..%2F/secret.txt",
        f"/{REPO}/resolve/%2e%2e/secret.txt",
        f"/alice/..%2F..%2F/resolve/{rev}/secret.txt",
        f"/..%2F..%2F/voice/resolve/{rev}/secret.txt",
        f"/%2e%2e/alice/resolve/{rev}/secret.txt",
        f"/api/models/{REPO}/tree/{rev}/..%2F..%2F",
        f"/api/models/{REPO}/tree/{rev}/%2Fetc",
        f"/api/models/{REPO}/tree/..%2F{rev}",
        f"/api/models/alice/..%2F..%2F/revision/{rev}",
        f"/api/models/{REPO}/revision/..%2F..%2Fsecret.txt",
        f"/api/models/{REPO}/revision/%2e%2e",
        "/../../secret.txt",
        "/%2e%2e/%2e%2e/secret.txt",
        f"/{tmp_path.as_posix().lstrip('/')}/secret.txt",
    ]
    for target in targets:
        status, body = await raw_get(hub.endpoint, target)
        assert status in (400, 404), (target, status)
        assert SECRET not in body, target
    # The listing does not mention the planted symlink either.
    status, body = await raw_get(hub.endpoint, f"/api/models/{REPO}/tree/{rev}?recursive=true")
    assert status == 200
    assert b"planted" not in body
    # And an honest request still works after all that.
    status, body = await raw_get(hub.endpoint, f"/{REPO}/resolve/{rev}/sub/deeper/note.txt")
    assert status == 200 and body.endswith(b"nested\n")
