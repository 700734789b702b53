"""The build context, the build cache and build leftovers against the project's real dockerd.

Hostile cases: a crafted ``.dockerignore`` (builds quickly, no thread left spinning), a non-UTF-8 one
(the miner's fault), an over-cap context (refused with the reason), ignored files really absent from
the image, no build cache shared between two miners, and nothing left behind by a failed, aborted or
multi-stage build, even when the build output names someone else's image.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import secrets
import sys
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from evaluation.errors import BuildFailed, RepoInvalid, StartFailed
from evaluation.sandbox import docker_sandbox
from evaluation.sandbox.docker_sandbox import (
    LABEL_HOTKEY,
    DockerSandbox,
    SandboxConfig,
    object_labels,
    ownership_filter,
)
from evaluation.types import Submission
from tests.conftest import remove_validator_objects

pytestmark = pytest.mark.docker

HEADER = "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n"


def submission(hotkey: str, uid: int = 1, revision: str | None = None) -> Submission:
    return Submission(
        uid=uid, hotkey=hotkey, repo_id=f"miner/{hotkey}", revision=revision or secrets.token_hex(20)
    )


def make_repo(dest: Path, dockerfile_body: str, files: dict[str, str | bytes] | None = None) -> Path:
    """A repo whose Dockerfile builds FROM the test base image and then runs ``dockerfile_body``."""
    dest.mkdir(parents=True)
    (dest / "Dockerfile").write_text(HEADER + dockerfile_body, encoding="utf-8")
    for name, content in (files or {}).items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return dest


@pytest.fixture
def config(sandbox_config: SandboxConfig) -> Iterator[SandboxConfig]:
    """An id of this test's own: its images (and cache seeds) are never another test's."""
    own = dataclasses.replace(
        sandbox_config, validator_id=f"{sandbox_config.validator_id}-{secrets.token_hex(3)}"
    )
    yield own
    remove_validator_objects(own)


@pytest.fixture
async def sandbox(config: SandboxConfig) -> AsyncIterator[DockerSandbox]:
    box = DockerSandbox(config)
    yield box
    await box.cleanup()
    await box.close()


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    docker_client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield docker_client
    docker_client.close()


@pytest.fixture
def build_logs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The daemon's output of each build request the sandbox sends (the real request, recorded)."""
    logs: list[list[str]] = []

    class RecordedRequest(docker_sandbox.BuildRequest):
        def events(self) -> Generator[dict[str, Any], None, None]:
            lines: list[str] = []
            logs.append(lines)
            for event in super().events():
                lines.extend(str(event.get("stream", "")).splitlines())
                yield event

    monkeypatch.setattr(docker_sandbox, "BuildRequest", RecordedRequest)
    return logs


async def built_image(sandbox: DockerSandbox, sub: Submission, repo: Path) -> str:
    """Build (the image's CMD ends at once, so start fails after the build) and return the image id."""
    with pytest.raises(StartFailed):
        await sandbox.start(sub, repo)
    client = await sandbox._docker()
    filters = ownership_filter(sandbox.config.validator_id)
    filters["label"].append(f"voice-validator.revision={sub.revision}")
    (image,) = client.images.list(filters=filters)
    return str(image.id)


def files_in_image(
    client: docker.DockerClient, image_id: str, folder: str, labels: dict[str, str]
) -> set[str]:
    """The paths under ``folder`` in the image, read from a created (never started) container."""
    container = client.containers.create(image_id, command=["true"], labels=labels, network_disabled=True)
    try:
        stream, _ = container.get_archive(folder)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            return {member.name for member in archive.getmembers()}
    finally:
        container.remove(force=True)


def ancestors(client: docker.DockerClient, image_id: str) -> set[str]:
    """The image and every parent above it (the legacy builder's chain of step images)."""
    out: set[str] = set()
    while image_id:
        out.add(image_id)
        image_id = client.api.inspect_image(image_id).get("Parent") or ""
    return out


def images_carrying(client: docker.DockerClient, marker: str, since: float) -> list[str]:
    """Ids of images (intermediate ones included) created since ``since`` whose config names ``marker``."""
    found = []
    for entry in client.api.images(all=True):
        if entry.get("Created", 0) < since - 2:
            continue
        with_marker = client.api.inspect_image(entry["Id"])
        if marker in str(with_marker.get("Config")) or marker in str(with_marker.get("ContainerConfig")):
            found.append(entry["Id"])
    return found


# ------------------------------------------------------------------------------------ the context


async def test_ignored_files_are_absent_from_the_image(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    ignore = "# secrets and data stay home\nsecret*\ndata/\n!data/keep.txt\n**/*.log\nDockerfile\n"
    repo = make_repo(
        tmp_path / "repo",
        'COPY . /ctx\nCMD ["true"]\n',
        {
            ".dockerignore": ignore,
            "secret.txt": "hunter2",
            "data/drop.bin": "x" * 100,
            "data/keep.txt": "kept",
            "src/app.py": "print(1)",
            "src/debug.log": "noise",
            "top.log": "noise",
        },
    )
    image_id = await built_image(sandbox, submission(f"hk-{secrets.token_hex(4)}"), repo)
    labels = object_labels(sandbox.config.validator_id, 1, "files")
    assert files_in_image(client, image_id, "/ctx", labels) == {
        "ctx",
        "ctx/Dockerfile",  # always sent: the daemon needs it
        "ctx/data",
        "ctx/data/keep.txt",  # an exception reopens the excluded folder for this file only
        "ctx/src",
        "ctx/src/app.py",
    }


def test_pathological_dockerignore_builds_at_once_and_leaves_no_thread(
    config: SandboxConfig, tmp_path: Path
) -> None:
    # The SDK turned these into backtracking regexps: one line kept a thread busy past any deadline.
    crafted = "\n".join(["**/" * 200 + "a*" * 200 + "b", "!" + "**/a" * 200 + "*c", "*a" * 300 + "*z"])
    deep = "/".join(["a" * 30] * 20)
    repo = make_repo(
        tmp_path / "repo", 'COPY . /ctx\nCMD ["true"]\n', {".dockerignore": crafted, f"{deep}/aaaa": "x"}
    )
    config = dataclasses.replace(config, build_timeout_s=60)
    baseline = threading.active_count()
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    try:
        box = DockerSandbox(config)
        with pytest.raises(StartFailed):  # built; the image's CMD serves nothing
            loop.run_until_complete(box.start(submission(f"hk-{secrets.token_hex(4)}"), repo))
        loop.run_until_complete(box.close())
    finally:
        loop.close()  # its executor's threads get their stop signal; a spinning one would stay
    assert time.monotonic() - started < config.build_timeout_s
    for _ in range(100):
        if threading.active_count() <= baseline:
            break
        time.sleep(0.1)
    assert threading.active_count() <= baseline

    def stack(frame: Any) -> Iterator[str]:
        while frame is not None:
            yield frame.f_code.co_filename
            frame = frame.f_back

    busy = [
        name
        for frame in sys._current_frames().values()
        for name in stack(frame)
        if name.endswith(("sandbox/dockerignore.py", "sandbox/build_context.py")) or "docker/utils" in name
    ]
    assert busy == []


async def test_non_utf8_dockerignore_is_the_miners_fault(
    sandbox: DockerSandbox, build_logs: list[list[str]], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", 'CMD ["true"]\n', {".dockerignore": b"*.log\n\xc3\x28 latin\n"})
    with pytest.raises(RepoInvalid, match=r"\.dockerignore line 2: not UTF-8"):
        await sandbox.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
    assert build_logs == []  # refused before anything reached the daemon


async def test_over_cap_context_is_refused_and_ignored_bytes_do_not_count(
    config: SandboxConfig, build_logs: list[list[str]], tmp_path: Path
) -> None:
    box = DockerSandbox(dataclasses.replace(config, context_max_bytes=256 * 1024))
    try:
        repo = make_repo(tmp_path / "big", 'CMD ["true"]\n', {"weights.bin": b"\0" * 300_000})
        with pytest.raises(RepoInvalid, match=r"build context is \d+ bytes .* more than the cap of 262144"):
            await box.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
        assert build_logs == []
        lean = make_repo(
            tmp_path / "lean", 'CMD ["true"]\n', {"weights.bin": b"\0" * 300_000, ".dockerignore": "*.bin\n"}
        )
        with pytest.raises(StartFailed):  # built: the ignored file was never part of the context
            await box.start(submission(f"hk-{secrets.token_hex(4)}"), lean)
        assert len(build_logs) == 1
    finally:
        await box.cleanup()
        await box.close()


# ------------------------------------------------------------------------------------ the build cache

DEPENDENCIES = (
    "COPY requirements.txt /app/requirements.txt\n"
    "RUN echo installing-$(cat /app/requirements.txt) && sleep 1 && echo done > /app/deps\n"
    "COPY model /app/model\n"
    'CMD ["true"]\n'
)


async def test_no_build_cache_is_shared_between_miners(
    sandbox: DockerSandbox, client: docker.DockerClient, build_logs: list[list[str]], tmp_path: Path
) -> None:
    files: dict[str, str | bytes] = {"requirements.txt": "numpy", "model/weights.txt": "v1"}
    alice, bob = f"hk-alice-{secrets.token_hex(3)}", f"hk-bob-{secrets.token_hex(3)}"
    base = len(client.images.get(sandbox.config.build_args["BASE_IMAGE"]).attrs["RootFS"]["Layers"])

    def run_layer(image_id: str) -> str:
        # Base layers, then the COPY of requirements.txt, then the RUN step's layer.
        return str(client.api.inspect_image(image_id)["RootFS"]["Layers"][base + 1])

    first = await built_image(sandbox, submission(alice, 1), make_repo(tmp_path / "a1", DEPENDENCIES, files))
    assert not any("Using cache" in line for line in build_logs[-1])

    # Bob's Dockerfile and files are identical to Alice's: he must still get none of her layers.
    copy = await built_image(sandbox, submission(bob, 2), make_repo(tmp_path / "b1", DEPENDENCIES, files))
    assert not any("Using cache" in line for line in build_logs[-1])
    assert any(line.startswith("installing-numpy") for line in build_logs[-1])  # his RUN step ran
    assert run_layer(copy) != run_layer(first)

    # Alice's next revision changes only model files: her own dependency layers are reused.
    files["model/weights.txt"] = "v2"
    second = await built_image(sandbox, submission(alice, 1), make_repo(tmp_path / "a2", DEPENDENCIES, files))
    log = build_logs[-1]
    assert sum("Using cache" in line for line in log) >= 2  # the COPY of requirements.txt and the RUN
    assert not any(line.startswith("installing-") for line in log)
    assert run_layer(second) == run_layer(first)
    assert client.images.get(second).labels[LABEL_HOTKEY] == alice

    # Bob's next revision seeds from Bob's image only, never from Alice's (newer) ones.
    bob_second = await built_image(
        sandbox, submission(bob, 2), make_repo(tmp_path / "b2", DEPENDENCIES, files)
    )
    assert not any(line.startswith("installing-") for line in build_logs[-1])
    assert run_layer(bob_second) == run_layer(copy) != run_layer(first)


# ------------------------------------------------------------------------------------ nothing left behind


async def test_build_failing_at_its_third_step_leaves_no_image(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    marker = f"vv-leftover-{secrets.token_hex(6)}"
    since = time.time()
    before = {entry["Id"] for entry in client.api.images(all=True)}
    repo = make_repo(tmp_path / "repo", f"ENV MARKER={marker}\nRUN echo step-3 && exit 3\n")
    with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
        await sandbox.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
    left = [i for i in images_carrying(client, marker, since) if i not in before]
    assert left == []


async def test_aborted_build_leaves_no_image(
    config: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    marker = f"vv-aborted-{secrets.token_hex(6)}"
    since = time.time()
    repo = make_repo(tmp_path / "repo", f"ENV MARKER={marker}\nRUN echo {marker} && sleep 120\n")
    box = DockerSandbox(dataclasses.replace(config, build_timeout_s=6))
    started = time.monotonic()
    try:
        with pytest.raises(BuildFailed, match="exceeded 6s"):
            await box.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
        assert time.monotonic() - started < 6 + 30
    finally:
        await box.close()
    assert images_carrying(client, marker, since) == []


async def test_multi_stage_build_leaves_only_its_image(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    marker = f"vv-stage-{secrets.token_hex(6)}"
    since = time.time()
    body = (
        f"ENV MARKER={marker}\nRUN echo built > /artifact\n"
        'FROM ${BASE_IMAGE}\nCOPY --from=0 /artifact /artifact\nCMD ["true"]\n'
    )
    repo = make_repo(tmp_path / "repo", body)
    repo.joinpath("Dockerfile").write_text(HEADER + body, encoding="utf-8")
    image_id = await built_image(sandbox, submission(f"hk-{secrets.token_hex(4)}"), repo)
    assert client.images.get(image_id)  # the image itself stays
    assert images_carrying(client, marker, since) == []  # the first stage's images went


async def test_forged_layer_lines_never_remove_someone_elses_image(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path, base_image: str
) -> None:
    # Another party's untagged image, made before the hostile build (labelled so teardown removes it).
    marker = f"vv-victim-{secrets.token_hex(6)}"
    labels = object_labels(sandbox.config.validator_id, 99, "victim")
    dockerfile = io.BytesIO(f"FROM {base_image}\nENV VICTIM={marker}\n".encode())
    for _ in client.api.build(fileobj=dockerfile, labels=labels, nocache=True, rm=True, decode=True):
        pass
    victims = images_carrying(client, marker, time.time() - 60)  # the ENV step and each LABEL step
    assert len(victims) >= 2
    forged = " && ".join(f"echo ' ---> {v[7:19]}' && echo ' ---> {v[7:]}'" for v in victims)
    repo = make_repo(tmp_path / "repo", f"RUN {forged} && exit 3\n")
    with pytest.raises(BuildFailed):
        await sandbox.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
    assert sorted(image.id for image in map(client.images.get, victims)) == sorted(victims)


# ------------------------------------------------------------------------------------ the request's query

SPAWN = """
import subprocess, sys
kids, refused = [], None
for _ in range(400):
    try:
        kids.append(subprocess.Popen(["sleep", "60"]))
    except OSError as exc:
        refused = exc
        break
sys.stdout.write(f"spawned {len(kids)} refused: {refused}\\n")
for kid in kids:
    kid.kill()
    kid.wait()
"""


async def test_sandbox_builds_run_in_the_builds_cgroup_under_its_process_bound(
    config: SandboxConfig, build_logs: list[list[str]], tmp_path: Path
) -> None:
    # The raw request carries the build-limits query (cgroupparent) the SDK's build call could not.
    box = DockerSandbox(dataclasses.replace(config, build_pids_limit=64))
    repo = make_repo(
        tmp_path / "repo",
        'COPY spawn.py /\nRUN cat /proc/self/cgroup && python3 /spawn.py\nCMD ["true"]\n',
        {"spawn.py": SPAWN},
    )
    try:
        with pytest.raises(StartFailed):  # built; the image's CMD serves nothing
            await box.start(submission(f"hk-{secrets.token_hex(4)}"), repo)
    finally:
        await box.cleanup()
        await box.close()
    log = "\n".join(build_logs[-1])
    assert "/voice-validator-build/" in log, log[-2000:]
    spawned = [line for line in build_logs[-1] if line.startswith("spawned ")]
    assert spawned and int(spawned[0].split()[1]) < 64, log[-2000:]
