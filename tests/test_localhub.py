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

from evaluation.localhub import HubPathError, LocalHub, publish, repo_dir

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


def test_publish_dataset_is_stored_apart_from_a_model_with_the_same_id(tmp_path: Path, store: Path) -> None:
    model = publish(store, REPO, make_source(tmp_path / "m"))
    data = publish(store, REPO, make_source(tmp_path / "d", readme="data\n"), repo_type="dataset")
    assert data != model
    assert repo_dir(store, REPO, "dataset") == store / "datasets" / REPO
    assert (store / "datasets" / REPO / data / "README.md").read_text() == "data\n"
    assert json.loads((store / "datasets" / REPO / "refs.json").read_text()) == {"main": data}
    # The model's refs still point at the model; nothing of the dataset landed in the model's folder.
    assert json.loads((store / REPO / "refs.json").read_text()) == {"main": model}
    assert not (store / REPO / data).exists()
    with pytest.raises(ValueError, match="repo_type"):
        publish(store, REPO, tmp_path / "d", repo_type="space")
    # A model in the "datasets" namespace would live inside the dataset tree, so it is refused.
    with pytest.raises(HubPathError, match="reserved"):
        publish(store, "datasets/voice", tmp_path / "m")
    with pytest.raises(HubPathError):
        publish(store, "../x", tmp_path / "d", repo_type="dataset")


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


# -- dataset repos ---------------------------------------------------------------------------------

DATASET_README = b"dataset readme\n"


@pytest.fixture
def dataset_revision(store: Path, tmp_path: Path, revision: str) -> str:
    """A dataset with the same id as the model of ``revision``, different content (published after it)."""
    source = make_source(tmp_path / "dataset-src", weights=b"\x02" * 3000, readme=DATASET_README.decode())
    (source / "data").mkdir()
    (source / "data" / "train.parquet").write_bytes(b"PAR1" + b"\x00" * 2000)
    return publish(store, REPO, source, repo_type="dataset")


async def test_dataset_info_and_tree(
    hub: LocalHub, revision: str, dataset_revision: str, tmp_path: Path
) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    info = await asyncio.to_thread(
        api.dataset_info, REPO, revision=dataset_revision, files_metadata=True, timeout=10
    )
    assert info.id == REPO and info.sha == dataset_revision
    assert info.siblings is not None
    siblings = {s.rfilename: s for s in info.siblings}
    source = files_of(tmp_path / "dataset-src")
    assert set(siblings) == set(source)
    for name, data in source.items():
        assert siblings[name].size == len(data)
        assert siblings[name].blob_id == git_blob_id(data)
    parquet_lfs = siblings["data/train.parquet"].lfs
    assert (
        parquet_lfs is not None
        and parquet_lfs.sha256 == hashlib.sha256(source["data/train.parquet"]).hexdigest()
    )
    # The branch resolves to the dataset's revision, and the model with the same id is untouched.
    info = await asyncio.to_thread(api.repo_info, REPO, repo_type="dataset", timeout=10)
    assert info.sha == dataset_revision
    assert (await asyncio.to_thread(api.model_info, REPO, timeout=10)).sha == revision

    def listing(path: str | None, recursive: bool) -> set[str]:
        entries = api.list_repo_tree(
            REPO, path_in_repo=path, revision=dataset_revision, recursive=recursive, repo_type="dataset"
        )
        return {e.path for e in entries}

    assert await asyncio.to_thread(listing, None, False) == {"README.md", "config.json", "data", "sub"}
    assert await asyncio.to_thread(listing, "data", True) == {"data/train.parquet"}


async def test_dataset_snapshot_download_with_allow_patterns(
    hub: LocalHub, dataset_revision: str, tmp_path: Path
) -> None:
    before = hub.requests["resolve"]
    out = await asyncio.to_thread(
        snapshot_download,
        REPO,
        repo_type="dataset",
        revision=dataset_revision,
        local_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        endpoint=hub.endpoint,
        token=False,
        allow_patterns=["data/*.parquet", "README.md"],
    )
    source = files_of(tmp_path / "dataset-src")
    assert files_of(Path(out)) == {k: source[k] for k in ("README.md", "data/train.parquet")}
    # Only the two allowed files were asked for: the client sends at most a HEAD and a GET per file.
    assert 2 <= hub.requests["resolve"] - before <= 4


async def test_dataset_resolve_headers_and_not_found(
    hub: LocalHub, revision: str, dataset_revision: str, tmp_path: Path
) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{hub.endpoint}/datasets/{REPO}/resolve/{dataset_revision}/README.md"
        async with session.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["X-Repo-Commit"] == dataset_revision
            assert resp.headers["ETag"] == f'"{git_blob_id(DATASET_README)}"'
            assert resp.headers["Content-Length"] == str(len(DATASET_README))
        async with session.get(url) as resp:
            assert resp.status == 200 and await resp.read() == DATASET_README
        async with session.get(f"{hub.endpoint}/datasets/{REPO}/resolve/main/README.md") as resp:
            assert resp.headers["X-Repo-Commit"] == dataset_revision
        # The model route still serves the model's README, not the dataset's.
        async with session.get(f"{hub.endpoint}/{REPO}/resolve/main/README.md") as resp:
            assert resp.headers["X-Repo-Commit"] == revision and await resp.read() == README
        # A dataset revision is not a model revision and vice versa.
        async with session.head(f"{hub.endpoint}/{REPO}/resolve/{dataset_revision}/README.md") as resp:
            assert resp.status == 404 and resp.headers["X-Error-Code"] == "RevisionNotFound"
        async with session.head(f"{hub.endpoint}/datasets/{REPO}/resolve/{revision}/README.md") as resp:
            assert resp.status == 404 and resp.headers["X-Error-Code"] == "RevisionNotFound"
        # /datasets/ is never a model namespace.
        async with session.get(f"{hub.endpoint}/api/models/datasets/{REPO.split('/')[0]}") as resp:
            assert resp.status == 404 and resp.headers["X-Error-Code"] == "RepoNotFound"

    api = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        await asyncio.to_thread(api.dataset_info, "alice/missing", timeout=10)
    with pytest.raises(RevisionNotFoundError):
        await asyncio.to_thread(api.dataset_info, REPO, revision="no-such-branch", timeout=10)
    with pytest.raises(RevisionNotFoundError):
        await asyncio.to_thread(api.dataset_info, REPO, revision="e" * 40, timeout=10)
    with pytest.raises(RemoteEntryNotFoundError):
        await asyncio.to_thread(
            hf_hub_download,
            REPO,
            "missing.txt",
            repo_type="dataset",
            revision=dataset_revision,
            local_dir=tmp_path / "out",
            endpoint=hub.endpoint,
            token=False,
        )
    with pytest.raises(RemoteEntryNotFoundError):
        await asyncio.to_thread(
            lambda: list(
                api.list_repo_tree(REPO, path_in_repo="nope", revision=dataset_revision, repo_type="dataset")
            )
        )


async def test_dataset_traversal_attempts_never_leave_the_revision(
    hub: LocalHub, store: Path, dataset_revision: str, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (store / "datasets" / "secret.txt").write_bytes(SECRET)
    (store / "datasets" / "alice" / "secret.txt").write_bytes(SECRET)
    (store / "alice" / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", store / "datasets" / REPO / dataset_revision / "planted.txt")
    rev = dataset_revision
    base = f"/datasets/{REPO}/resolve"
    targets = [
        f"{base}/{rev}/../../secret.txt",
        f"{base}/{rev}/..%2f..%2fsecret.txt",
        f"{base}/{rev}/..%2F..%2F..%2F..%2Fsecret.txt",
        f"{base}/{rev}/%2e%2e/%2e%2e/secret.txt",
        f"{base}/{rev}/%2E%2E%2F%2E%2E%2Fsecret.txt",
        f"{base}/{rev}/sub/..%2f..%2f..%2fsecret.txt",
        f"{base}/{rev}/..%5c..%5csecret.txt",
        f"{base}/{rev}/%252e%252e/%252e%252esecret.txt",
        f"{base}/{rev}/%2F{tmp_path.as_posix().lstrip('/')}/secret.txt",
        f"{base}/{rev}//{tmp_path.as_posix().lstrip('/')}/secret.txt",
        f"{base}/{rev}/{tmp_path.as_posix().replace('/', '%2F')}%2Fsecret.txt",
        f"{base}/{rev}/planted.txt",
        f"{base}/{rev}/%00secret.txt",
        f"{base}/..%2f..%2f/secret.txt",
        f"{base}/%2e%2e/secret.txt",
        f"/datasets/alice/..%2F..%2F/resolve/{rev}/secret.txt",
        f"/datasets/..%2F..%2F/voice/resolve/{rev}/secret.txt",
        f"/datasets/%2e%2e/alice/resolve/{rev}/secret.txt",
        f"/datasets/%2e%2e/%2e%2e/resolve/{rev}/secret.txt",
        "/datasets/secret.txt",
        "/datasets/alice/secret.txt",
        f"/datasets/alice/resolve/{rev}/secret.txt",
        f"/api/datasets/{REPO}/tree/{rev}/..%2F..%2F",
        f"/api/datasets/{REPO}/tree/{rev}/%2Fetc",
        f"/api/datasets/{REPO}/tree/..%2F{rev}",
        f"/api/datasets/alice/..%2F..%2F/revision/{rev}",
        f"/api/datasets/..%2F/alice/revision/{rev}",
        f"/api/datasets/{REPO}/revision/..%2F..%2Fsecret.txt",
        f"/api/datasets/{REPO}/revision/%2e%2e",
        # The model routes cannot reach into the dataset tree through the reserved namespace.
        f"/datasets/alice/resolve/{rev}/voice/README.md",
        f"/api/models/datasets/alice/revision/{rev}",
        f"/api/models/datasets/alice/tree/{rev}/voice",
    ]
    for target in targets:
        status, body = await raw_get(hub.endpoint, target)
        assert status in (400, 404), (target, status)
        assert SECRET not in body, target
        assert DATASET_README not in body, target
    status, body = await raw_get(hub.endpoint, f"/api/datasets/{REPO}/tree/{rev}?recursive=true")
    assert status == 200
    assert b"planted" not in body
    status, body = await raw_get(hub.endpoint, f"{base}/{rev}/sub/deeper/note.txt")
    assert status == 200 and body.endswith(b"nested\n")
