"""The build context without Docker: members after .dockerignore, the streamed tar, its digest, the
rule that picks a build's leftover images, and the build request's query."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from evaluation.errors import InfrastructureError, RepoInvalid
from evaluation.sandbox.build_context import (
    FIXED_MTIME,
    check_context_size,
    context_digest,
    context_members,
    context_size,
    prepare_context,
    tar_stream,
)
from evaluation.sandbox.build_leftovers import leftover_images, reported_layers
from evaluation.sandbox.image_build import build_params


def repo(tmp_path: Path, files: dict[str, str | bytes], ignore: str | None = None) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if ignore is not None:
        (root / ".dockerignore").write_text(ignore, encoding="utf-8")
    return root


def read_back(root: Path) -> dict[str, tarfile.TarInfo]:
    members = context_members(root)
    data = b"".join(tar_stream(root, members, max_bytes=10**9))
    assert len(data) == context_size(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {info.name.rstrip("/"): info for info in archive.getmembers()}


def test_members_follow_the_ignore_rules(tmp_path: Path) -> None:
    root = repo(
        tmp_path,
        {"a.py": "1", "b.log": "x", "d/c.log": "x", "data/x": "x", "data/keep/k": "k", "data/y/z": "z"},
        ignore="*.log\n**/*.log\ndata\n!data/keep\nDockerfile\n",
    )
    paths = [m.path for m in context_members(root)]
    # Dockerfile always (the daemon needs it); .dockerignore never (nothing left for the daemon to apply);
    # the excluded "data" folder is sent as a folder only because "!data/keep" takes something back.
    assert paths == ["Dockerfile", "a.py", "d", "data", "data/keep", "data/keep/k"]


def test_without_exceptions_an_excluded_folder_is_not_even_walked(tmp_path: Path) -> None:
    root = repo(tmp_path, {"keep.txt": "1", "cache/x": "x"}, ignore="cache\n")
    os.mkfifo(root / "cache" / "pipe")  # would be refused if it were looked at
    assert [m.path for m in context_members(root)] == ["Dockerfile", "keep.txt"]


def test_symlinks_are_sent_as_links_and_special_files_refused(tmp_path: Path) -> None:
    root = repo(tmp_path, {"model/w.bin": b"\0" * 10})
    (root / "link").symlink_to("model/w.bin")
    (root / "dirlink").symlink_to("model")
    infos = read_back(root)
    assert infos["link"].issym() and infos["link"].linkname == "model/w.bin"
    assert infos["dirlink"].issym() and "dirlink/w.bin" not in infos
    os.mkfifo(root / "model" / "pipe")
    with pytest.raises(RepoInvalid, match="special file in repo: model/pipe"):
        context_members(root)


def test_dockerfile_must_be_a_regular_file(tmp_path: Path) -> None:
    root = repo(tmp_path, {"real": "FROM x\n"})
    (root / "Dockerfile").unlink()
    (root / "Dockerfile").symlink_to("real")
    with pytest.raises(RepoInvalid, match="Dockerfile must be a regular file"):
        context_members(root)


def test_non_utf8_ignore_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    root = repo(tmp_path, {})
    (root / ".dockerignore").write_bytes(b"ok\n# fine\n\xe9t\xe9\n")
    with pytest.raises(RepoInvalid, match=r"\.dockerignore line 3: not UTF-8"):
        context_members(root)


def test_tar_is_deterministic_with_fixed_owner_time_and_the_repos_modes(tmp_path: Path) -> None:
    root = repo(tmp_path, {"run.sh": "#!/bin/sh\n", "model/w.bin": os.urandom(3000), "é/ü.txt": "x"})
    (root / "run.sh").chmod(0o4755)  # setuid: dropped
    (root / "model" / "w.bin").chmod(0o600)
    first = b"".join(tar_stream(root, context_members(root), max_bytes=10**9))
    os.utime(root / "run.sh", (1, 1))  # mtimes never reach the tar
    assert b"".join(tar_stream(root, context_members(root), max_bytes=10**9)) == first
    infos = read_back(root)
    assert {(i.uid, i.gid, i.uname, i.gname, i.mtime) for i in infos.values()} == {
        (0, 0, "", "", FIXED_MTIME)
    }
    assert infos["run.sh"].mode == 0o755 and infos["model/w.bin"].mode == 0o600
    assert "é/ü.txt" in infos
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        extracted = archive.extractfile("model/w.bin")
        assert extracted is not None and extracted.read() == (root / "model" / "w.bin").read_bytes()


def test_tar_streams_in_chunks_without_holding_the_archive(tmp_path: Path) -> None:
    root = repo(tmp_path, {})
    with open(root / "weights.bin", "wb") as handle:
        handle.truncate(64 * 2**20)  # 64 MiB (sparse: no disk cost)
    members = context_members(root)
    tracemalloc.start()
    try:
        sizes = [len(chunk) for chunk in tar_stream(root, members, max_bytes=2**30, chunk_bytes=2**20)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == context_size(members) and max(sizes) <= 2**20 and len(sizes) > 60
    assert peak < 8 * 2**20  # a few chunks in flight, never the 64 MiB


def test_context_cap_is_checked_before_and_while_streaming(tmp_path: Path) -> None:
    root = repo(tmp_path, {"w.bin": b"\0" * 20_000})
    members = context_members(root)
    size = context_size(members)
    assert check_context_size(members, size) == size
    with pytest.raises(RepoInvalid, match=rf"build context is {size} bytes .* cap of {size - 1} bytes"):
        check_context_size(members, size - 1)
    with pytest.raises(RepoInvalid, match="more than the cap"):
        b"".join(tar_stream(root, members, max_bytes=size - 1, chunk_bytes=4096))


def test_a_file_changed_after_listing_is_our_failure(tmp_path: Path) -> None:
    root = repo(tmp_path, {"w.bin": b"\0" * 100})
    members = context_members(root)
    (root / "w.bin").write_bytes(b"\0" * 50)
    with pytest.raises(InfrastructureError, match=r"w\.bin changed"):
        b"".join(tar_stream(root, members, max_bytes=10**9))


def test_stream_stops_when_its_check_raises(tmp_path: Path) -> None:
    root = repo(tmp_path, {"a": b"\0" * 50_000, "b": b"\0" * 50_000})
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise TimeoutError

    with pytest.raises(TimeoutError):
        b"".join(tar_stream(root, context_members(root), max_bytes=10**9, chunk_bytes=16_384, check=check))
    assert len(calls) == 2


def test_digest_covers_exactly_what_is_sent(tmp_path: Path) -> None:
    root = repo(tmp_path, {"a.txt": "one", "notes.md": "draft"}, ignore="*.md\n")
    first = context_digest(root, {})
    assert context_digest(root, {}) == first
    assert context_digest(root, {"BASE_IMAGE": "x"}) != first
    (root / "notes.md").write_text("another draft", encoding="utf-8")  # ignored: not sent
    os.utime(root / "a.txt", (5, 5))  # mtimes are not sent either
    assert context_digest(root, {}) == first
    (root / "a.txt").chmod(0o600)
    assert context_digest(root, {}) != first
    (root / "a.txt").write_text("two", encoding="utf-8")
    changed = context_digest(root, {})
    (root / "link").symlink_to("/etc/passwd")  # hashed as its target text, never followed
    assert context_digest(root, {}) != changed
    prepared = prepare_context(root, {}, 10**9)
    assert prepared.digest == context_digest(root, {}) and prepared.size == context_size(prepared.members)


# ------------------------------------------------------------------------------------ leftovers


def image(i: str, parent: str = "", tags: list[str] | None = None, digests: list[str] | None = None) -> dict:
    return {
        "Id": f"sha256:{i * 64}"[:71],
        "ParentId": f"sha256:{parent * 64}"[:71] if parent else "",
        "RepoTags": tags if tags is not None else ["<none>:<none>"],
        "RepoDigests": digests if digests is not None else ["<none>@<none>"],
    }


def full(i: str) -> str:
    return f"sha256:{i * 64}"[:71]


def test_leftovers_are_only_fresh_untagged_images_the_build_named() -> None:
    listing = [
        image("0", tags=["base:1"]),  # the FROM image
        image("1", "0"),  # step 2 of this build
        image("2", "1"),  # step 3 of this build
        image("3", "2"),  # committed after we stopped reading: a child of ours
        image("4", "0"),  # someone else's, made before the build
        image("5", "0", tags=["other:1"]),  # a tagged image made during the build
        image("6", "0", digests=["repo@sha256:" + "6" * 64]),  # pulled by digest during the build
        image("7", "0"),  # created during the build by someone else, never named
    ]
    before = {full("0"), full("4")}
    reported = ["0" * 12, "1" * 12, "2" * 64, "4" * 12, "5" * 12, "6" * 12]
    assert leftover_images(listing, reported, before) == [full("3"), full("2"), full("1")]


def test_leftovers_spare_the_built_image_and_its_ancestors() -> None:
    listing = [
        image("0", tags=["base:1"]),
        image("1", "0"),
        image("2", "1"),
        image("8", "0"),
        image("9", "8"),
    ]
    reported = ["1" * 12, "2" * 12, "8" * 12, "9" * 12]
    # "2" was built on "1"; "8" and "9" were an earlier stage of a multi-stage build.
    assert leftover_images(listing, reported, {full("0")}, built=full("2")) == [full("9"), full("8")]


def test_one_genuine_id_recovers_its_whole_chain() -> None:
    listing = [
        image("0", tags=["base:1"]),
        image("1", "0"),
        image("2", "1"),
        image("3", "2"),
        image("4", "0"),
    ]
    # Only the middle step was recorded (a flood of fake lines pushed the others out).
    assert leftover_images(listing, ["2" * 12], {full("0")}) == [full("3"), full("2"), full("1")]


def test_an_ambiguous_short_id_names_nothing() -> None:
    a = {"Id": "sha256:abc" + "0" * 61, "ParentId": "", "RepoTags": None, "RepoDigests": None}
    b = {"Id": "sha256:abc" + "1" * 61, "ParentId": "", "RepoTags": None, "RepoDigests": None}
    assert leftover_images([a, b], ["abc"], set()) == []


def test_reported_layers_are_the_builders_arrow_lines() -> None:
    lines = [
        " ---> ec947af02fbb",
        " ---> Running in 77839b20794e",
        "x ---> aaaaaaaaaaaa",
        " ---> ec947af02fbb",
    ]
    assert reported_layers(lines) == ["ec947af02fbb"]


# ------------------------------------------------------------------------------------ the build query


def test_build_params_use_no_cache_unless_seeded_by_the_miners_own_image() -> None:
    common = {
        "tag": "voice-validator-miner:v-uid1-abc",
        "labels": {"voice-validator.hotkey": "5Hk"},
        "build_args": {"BASE_IMAGE": "base"},
        "network_mode": "none",
        "memory": 2**30,
        "cpu_shares": 512,
        "shm_size": 2**28,
    }
    cold = build_params(**common, cache_from=None)  # type: ignore[arg-type]
    assert cold["nocache"] == "1" and "cachefrom" not in cold
    assert cold["memswap"] == cold["memory"] == str(2**30)  # no swap
    assert (cold["rm"], cold["forcerm"], cold["pull"], cold["dockerfile"]) == ("1", "1", "0", "Dockerfile")
    assert json.loads(cold["labels"]) == {"voice-validator.hotkey": "5Hk"}
    assert json.loads(cold["buildargs"]) == {"BASE_IMAGE": "base"}
    warm = build_params(**common, cache_from="sha256:" + "a" * 64)  # type: ignore[arg-type]
    assert warm["nocache"] == "0" and json.loads(warm["cachefrom"]) == ["sha256:" + "a" * 64]
