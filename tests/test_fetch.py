"""Repo fetching with the real huggingface_hub client against LocalHub and scripted hubs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evaluation import fetch as fetch_module
from evaluation.errors import InfrastructureError, RepoInvalid
from evaluation.fetch import HubRepoSource, LocalDirSource, check_repo
from evaluation.localhub import LocalHub, publish
from evaluation.types import Submission

REPO = "miner/voice"
HOTKEY = "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"


def make_repo(
    folder: Path, *, hotkey: str = HOTKEY, weights: bytes = b"\x07" * 4096, tag: str = "v1"
) -> Path:
    """A synthetic miner repo with every required file and a weights file."""
    (folder / "model").mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM base\nCOPY . /app\n")
    (folder / "server.py").write_text(f"# server {tag}\n")
    (folder / "inference.py").write_text("def run():\n    return 'ok'\n")
    (folder / "requirements.txt").write_text("numpy\n")
    (folder / "hotkey.txt").write_text(hotkey + "\n")
    (folder / "model" / "weights.bin").write_bytes(weights)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def submission(revision: str, repo_id: str = REPO) -> Submission:
    return Submission(uid=1, hotkey=HOTKEY, repo_id=repo_id, revision=revision)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
async def hub(store: Path) -> AsyncIterator[LocalHub]:
    server = LocalHub(store, lfs_threshold=1000)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- HubRepoSource against LocalHub ----------------------------------------------------------------


async def test_fetches_the_committed_revision_after_main_moved(
    hub: LocalHub, store: Path, tmp_path: Path
) -> None:
    v1 = publish(store, REPO, make_repo(tmp_path / "v1", tag="v1"))
    v2 = publish(store, REPO, make_repo(tmp_path / "v2", tag="v2", weights=b"\x08" * 5000))
    assert v1 != v2  # main now points at v2

    source = HubRepoSource(endpoint=hub.endpoint, timeout_s=60)
    dest_root = tmp_path / "work"
    got_v1 = await source.fetch(submission(v1), dest_root)
    assert files_of(got_v1) == files_of(tmp_path / "v1")
    got_v2 = await source.fetch(submission(v2), dest_root)
    assert files_of(got_v2) == files_of(tmp_path / "v2")

    # Only the two results remain: no staging folder, no client bookkeeping inside the repos.
    assert sorted(p.name for p in dest_root.iterdir()) == sorted([got_v1.name, got_v2.name])
    assert not (got_v1 / ".cache").exists()
    await asyncio.to_thread(check_repo, got_v1, HOTKEY)

    # Fetching the same revision again replaces the earlier copy.
    again = await source.fetch(submission(v1), dest_root)
    assert again == got_v1
    assert files_of(again) == files_of(tmp_path / "v1")


async def test_two_sources_use_their_own_endpoints(tmp_path: Path) -> None:
    stores = [tmp_path / "hub-a", tmp_path / "hub-b"]
    revisions = [publish(s, REPO, make_repo(tmp_path / f"src-{i}", tag=str(i))) for i, s in enumerate(stores)]
    hubs = [LocalHub(s) for s in stores]
    async with hubs[0] as endpoint_a, hubs[1] as endpoint_b:
        a = await HubRepoSource(endpoint=endpoint_a).fetch(submission(revisions[0]), tmp_path / "out-a")
        b = await HubRepoSource(endpoint=endpoint_b).fetch(submission(revisions[1]), tmp_path / "out-b")
        with pytest.raises(RepoInvalid, match="not found"):
            await HubRepoSource(endpoint=endpoint_a).fetch(submission(revisions[1]), tmp_path / "out-c")
    assert files_of(a) == files_of(tmp_path / "src-0")
    assert files_of(b) == files_of(tmp_path / "src-1")


async def test_unknown_revision_or_repo_is_repo_invalid(hub: LocalHub, store: Path, tmp_path: Path) -> None:
    revision = publish(store, REPO, make_repo(tmp_path / "src"))
    source = HubRepoSource(endpoint=hub.endpoint)
    with pytest.raises(RepoInvalid, match="revision not found"):
        await source.fetch(submission("0123456789" * 4), tmp_path / "work")
    with pytest.raises(RepoInvalid, match="repo not found"):
        await source.fetch(submission(revision, repo_id="miner/other"), tmp_path / "work")
    assert hub.requests["resolve"] == 0


@pytest.mark.parametrize(
    ("repo_id", "revision"),
    [
        ("miner/voice", "main"),
        ("miner/voice", "abc123"),
        ("miner/voice", "A" * 40),
        ("../voice", "a" * 40),
        ("miner/..", "a" * 40),
        ("miner/voice/extra", "a" * 40),
        ("miner--x/voice", "a" * 40),
        ("voice", "a" * 40),
    ],
)
async def test_malformed_reference_is_rejected_without_asking_the_hub(
    hub: LocalHub, tmp_path: Path, repo_id: str, revision: str
) -> None:
    with pytest.raises(RepoInvalid, match="invalid"):
        await HubRepoSource(endpoint=hub.endpoint).fetch(submission(revision, repo_id), tmp_path / "work")
    assert sum(hub.requests.values()) == 0


async def test_too_large_is_rejected_before_any_download(hub: LocalHub, store: Path, tmp_path: Path) -> None:
    revision = publish(store, REPO, make_repo(tmp_path / "src", weights=b"\x01" * 50_000))
    total = sum(len(data) for data in files_of(tmp_path / "src").values())
    source = HubRepoSource(endpoint=hub.endpoint, max_repo_bytes=10_000)
    with pytest.raises(RepoInvalid, match=rf"repo is {total} bytes .*limit is 10000 bytes"):
        await source.fetch(submission(revision), tmp_path / "work")
    # The listing was read; no tree listing and no file was requested.
    assert hub.requests["info"] == 1
    assert hub.requests["tree"] == 0
    assert hub.requests["resolve"] == 0
    assert not (tmp_path / "work").exists()


async def test_too_many_files_is_rejected_before_any_download(
    hub: LocalHub, store: Path, tmp_path: Path
) -> None:
    revision = publish(store, REPO, make_repo(tmp_path / "src"))
    with pytest.raises(RepoInvalid, match="repo has 6 files; the limit is 5"):
        await HubRepoSource(endpoint=hub.endpoint, max_files=5).fetch(submission(revision), tmp_path / "work")
    assert hub.requests["resolve"] == 0


async def test_bytes_that_differ_from_the_listing_are_infrastructure_error(
    hub: LocalHub, store: Path, tmp_path: Path
) -> None:
    revision = publish(store, REPO, make_repo(tmp_path / "src"))
    source = HubRepoSource(endpoint=hub.endpoint)
    await source.fetch(submission(revision), tmp_path / "first")  # the hub has indexed the revision now
    # Same size, different bytes: the client's own size check passes, the digest check must not.
    (store / REPO / revision / "server.py").write_text("# SERVER V1\n")
    with pytest.raises(InfrastructureError, match="digest"):
        await source.fetch(submission(revision), tmp_path / "second")
    assert list((tmp_path / "second").iterdir()) == []


async def test_hub_down_is_infrastructure_error(store: Path, tmp_path: Path) -> None:
    revision = publish(store, REPO, make_repo(tmp_path / "src"))
    hub = LocalHub(store)
    async with hub as endpoint:
        pass  # the port is closed again now
    with pytest.raises(InfrastructureError, match=r"ConnectError|connect"):
        await HubRepoSource(endpoint=endpoint, timeout_s=30).fetch(submission(revision), tmp_path / "work")


# -- HubRepoSource against scripted hubs -----------------------------------------------------------


@dataclass
class Script:
    """What the scripted hub answers; ``files`` are served as one revision."""

    mode: str = "good"
    revision: str = "ab" * 20
    files: dict[str, bytes] = field(default_factory=dict)
    bad_name: str = ""
    drip_delay_s: float = 0.05
    release: asyncio.Event = field(default_factory=asyncio.Event)
    listed_sizes: dict[str, int] = field(default_factory=dict)
    gets: int = 0
    bytes_sent: int = 0


SCRIPT_KEY: web.AppKey[Script] = web.AppKey("script", Script)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


async def _info(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT_KEY]
    if script.mode == "error500":
        return web.json_response({"error": "boom"}, status=500)
    if script.mode == "slow":
        # Held until teardown: aiohttp waits for running handlers when it shuts down.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(script.release.wait(), 30)
    siblings: list[dict[str, Any]] = [
        {"rfilename": name, "size": script.listed_sizes.get(name, len(data)), "blobId": _blob_id(data)}
        for name, data in script.files.items()
    ]
    if script.mode == "bad_name":
        siblings.append({"rfilename": script.bad_name, "size": 1, "blobId": _blob_id(b"x")})
    sha = "cd" * 20 if script.mode == "other_sha" else script.revision
    return web.json_response({"id": REPO, "sha": sha, "siblings": siblings})


async def _tree(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT_KEY]
    return web.json_response(
        [
            {"type": "file", "oid": _blob_id(data), "size": len(data), "path": name}
            for name, data in script.files.items()
        ]
    )


async def _resolve(request: web.Request) -> web.StreamResponse:
    script = request.app[SCRIPT_KEY]
    data = script.files[request.match_info["path"]]
    headers = {
        "X-Repo-Commit": script.revision,
        "ETag": f'"{_blob_id(data)}"',
        "Content-Length": str(len(data)),
    }
    if request.method == "HEAD":
        return web.Response(headers=headers)
    script.gets += 1
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    piece = 2**20 if script.mode == "oversize" else 1
    for i in range(0, len(data), piece):
        if script.mode in ("drip", "oversize"):
            await asyncio.sleep(script.drip_delay_s)
        await response.write(data[i : i + piece])
        script.bytes_sent += len(data[i : i + piece])
    await response.write_eof()
    return response


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Script, str]]:
    script = Script(files={"Dockerfile": b"FROM base\n", "hotkey.txt": HOTKEY.encode()})
    app = web.Application()
    app[SCRIPT_KEY] = script
    app.router.add_get("/api/models/{ns}/{name}/revision/{rev}", _info)
    app.router.add_get("/api/models/{ns}/{name}/tree/{rev}", _tree)
    app.router.add_get("/{ns}/{name}/resolve/{rev}/{path:.+}", _resolve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield script, f"http://{host}:{port}"
    finally:
        script.release.set()
        await runner.cleanup()


async def test_scripted_hub_serves_a_good_download(scripted: tuple[Script, str], tmp_path: Path) -> None:
    script, endpoint = scripted
    got = await HubRepoSource(endpoint=endpoint).fetch(submission(script.revision), tmp_path / "work")
    assert files_of(got) == script.files


async def test_hub_server_error_is_infrastructure_error(scripted: tuple[Script, str], tmp_path: Path) -> None:
    script, endpoint = scripted
    script.mode = "error500"
    with pytest.raises(InfrastructureError, match="500"):
        await HubRepoSource(endpoint=endpoint).fetch(submission(script.revision), tmp_path / "work")


async def test_slow_hub_hits_the_deadline(scripted: tuple[Script, str], tmp_path: Path) -> None:
    script, endpoint = scripted
    script.mode = "slow"
    started = time.monotonic()
    with pytest.raises(InfrastructureError):
        await HubRepoSource(endpoint=endpoint, timeout_s=0.5).fetch(
            submission(script.revision), tmp_path / "w"
        )
    assert time.monotonic() - started < 5


async def test_hub_resolving_to_another_commit_is_repo_invalid(
    scripted: tuple[Script, str], tmp_path: Path
) -> None:
    script, endpoint = scripted
    script.mode = "other_sha"
    with pytest.raises(RepoInvalid, match="different commit"):
        await HubRepoSource(endpoint=endpoint).fetch(submission(script.revision), tmp_path / "work")


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/etc/passwd",
        "a/../../b",
        "a/./b",
        "a//b",
        "a\\..\\b",
        ".cache/huggingface/x",
        ".git/config",
        "",
    ],
)
async def test_unsafe_names_in_listing_are_repo_invalid(
    scripted: tuple[Script, str], tmp_path: Path, name: str
) -> None:
    script, endpoint = scripted
    script.mode, script.bad_name = "bad_name", name
    with pytest.raises(RepoInvalid, match="file name"):
        await HubRepoSource(endpoint=endpoint).fetch(submission(script.revision), tmp_path / "work")


async def test_download_past_the_deadline_is_stopped_and_cleaned_up(
    scripted: tuple[Script, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script, endpoint = scripted
    script.mode = "drip"
    script.files["model.bin"] = b"w" * 40  # 40 x 50 ms: about 2 s to send
    monkeypatch.setattr(fetch_module, "_STOP_GRACE_S", 10.0)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="evaluation.fetch"),
        pytest.raises(InfrastructureError, match=r"not finished within 0\.5 s"),
    ):
        await HubRepoSource(endpoint=endpoint, timeout_s=0.5).fetch(
            submission(script.revision), tmp_path / "work"
        )
    # The worker thread stopped by itself (no "left behind" warning) and the staging folder is gone.
    assert time.monotonic() - started < 9
    assert "leaving it behind" not in caplog.text
    assert list((tmp_path / "work").iterdir()) == []


# -- LocalDirSource --------------------------------------------------------------------------------


async def test_local_dir_copies_without_git_and_keeps_links(tmp_path: Path) -> None:
    src = make_repo(tmp_path / "src")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / "model" / "alias.bin").symlink_to("weights.bin")
    got = await LocalDirSource(src).fetch(submission("0" * 40, "local/src"), tmp_path / "work")
    assert not (got / ".git").exists()
    assert (got / "model" / "alias.bin").is_symlink()
    assert os.readlink(got / "model" / "alias.bin") == "weights.bin"
    assert files_of(got) == {k: v for k, v in files_of(src).items() if not k.startswith(".git/")}
    await asyncio.to_thread(check_repo, got, HOTKEY)


async def test_local_dir_limits(tmp_path: Path) -> None:
    src = make_repo(tmp_path / "src", weights=b"\x00" * 20_000)
    with pytest.raises(RepoInvalid, match="more than 10000 bytes"):
        await LocalDirSource(src, max_repo_bytes=10_000).fetch(submission("0" * 40), tmp_path / "work")
    with pytest.raises(RepoInvalid, match="more than 3 files"):
        await LocalDirSource(src, max_files=3).fetch(submission("0" * 40), tmp_path / "work")
    with pytest.raises(RepoInvalid, match="not a folder"):
        await LocalDirSource(tmp_path / "nope").fetch(submission("0" * 40), tmp_path / "work")
    os.mkfifo(src / "pipe")
    with pytest.raises(RepoInvalid, match="special file"):
        await LocalDirSource(src).fetch(submission("0" * 40), tmp_path / "work")


# -- check_repo ------------------------------------------------------------------------------------


def test_check_repo_accepts_a_good_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    check_repo(repo, HOTKEY)
    check_repo(repo, None)
    (repo / "hotkey.txt").write_bytes(b"\xef\xbb\xbf  " + HOTKEY.encode() + b"\r\n")  # BOM and CRLF
    check_repo(repo, HOTKEY)
    (repo / "model" / "alias.bin").symlink_to("weights.bin")  # links inside the repo are fine
    check_repo(repo, HOTKEY)


@pytest.mark.parametrize(
    "name", ["Dockerfile", "server.py", "inference.py", "requirements.txt", "hotkey.txt"]
)
def test_check_repo_missing_required_file(tmp_path: Path, name: str) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / name).unlink()
    with pytest.raises(RepoInvalid, match=f"missing required file.*{name}"):
        check_repo(repo, HOTKEY)


def test_check_repo_required_file_must_be_regular(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "server.py").unlink()
    (repo / "server.py").symlink_to("inference.py")
    with pytest.raises(RepoInvalid, match=r"server\.py must be a regular file"):
        check_repo(repo, HOTKEY)
    repo2 = make_repo(tmp_path / "repo2")
    (repo2 / "Dockerfile").unlink()
    (repo2 / "Dockerfile").mkdir()
    with pytest.raises(RepoInvalid, match="Dockerfile must be a regular file"):
        check_repo(repo2, HOTKEY)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (HOTKEY.encode() + b" " * 1000, "smaller than 1024"),
        (b"\xff\xfe" + HOTKEY.encode(), "not valid UTF-8"),
        (b"  \n\t", "empty"),
        (b"", "empty"),
        (b"5OtherHotkeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", "names '5OtherHotkey"),
        (HOTKEY.lower().encode(), "names"),
    ],
)
def test_check_repo_hotkey_failures(tmp_path: Path, content: bytes, reason: str) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "hotkey.txt").write_bytes(content)
    with pytest.raises(RepoInvalid, match=reason):
        check_repo(repo, HOTKEY)


def test_check_repo_hotkey_just_under_the_size_limit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    content = HOTKEY.encode() + b"\n" * (1023 - len(HOTKEY))
    assert len(content) == 1023
    (repo / "hotkey.txt").write_bytes(content)
    check_repo(repo, HOTKEY)


def test_check_repo_hotkey_not_compared_without_expectation(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", hotkey="someone-else")
    check_repo(repo, None)
    with pytest.raises(RepoInvalid, match="names 'someone-else'"):
        check_repo(repo, HOTKEY)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "/", "../.././repo/../outside"])
def test_check_repo_symlink_outside(tmp_path: Path, target: str) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "outside").write_text("secret")
    (repo / "model" / "link").symlink_to(target)
    with pytest.raises(RepoInvalid, match="symlink model/link points outside the repo"):
        check_repo(repo, HOTKEY)


def test_check_repo_special_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    os.mkfifo(repo / "model" / "pipe")
    with pytest.raises(RepoInvalid, match="special file in repo: model/pipe"):
        check_repo(repo, HOTKEY)


def test_check_repo_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RepoInvalid, match="repo folder missing"):
        check_repo(tmp_path / "nope", HOTKEY)


async def test_abort_stops_the_remaining_downloads(
    scripted: tuple[Script, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, endpoint = scripted
    script.mode = "drip"
    # 24 files of about 1 s each, 8 at a time: about 3 s if nothing stops the client after the deadline.
    script.files = {f"part{i:02d}.bin": b"p" * 20 for i in range(24)}
    monkeypatch.setattr(fetch_module, "_STOP_GRACE_S", 10.0)
    with pytest.raises(InfrastructureError, match="not finished"):
        await HubRepoSource(endpoint=endpoint, timeout_s=0.5).fetch(
            submission(script.revision), tmp_path / "work"
        )
    # The first files finished, then the client's next progress report raised and the rest never started.
    assert 0 < script.gets < len(script.files)
    assert list((tmp_path / "work").iterdir()) == []


async def test_hub_sending_more_than_listed_is_stopped(
    scripted: tuple[Script, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, endpoint = scripted
    script.mode, script.drip_delay_s = "oversize", 0.1
    script.files["model.bin"] = b"m" * (40 * 2**20)  # 40 MiB, sent 1 MiB per 0.1 s
    script.listed_sizes["model.bin"] = 10  # while the listing claims 10 bytes
    monkeypatch.setattr(fetch_module, "_WATCH_INTERVAL_S", 0.05)
    with pytest.raises(InfrastructureError, match="more than the"):
        await HubRepoSource(endpoint=endpoint, timeout_s=60).fetch(
            submission(script.revision), tmp_path / "work"
        )
    # Stopped at the client's next 10 MiB progress report, well before the whole body.
    assert script.bytes_sent < 30 * 2**20
    assert list((tmp_path / "work").iterdir()) == []
