"""The build policy on the project's real dockerd: what the daemon itself would fetch or resolve is refused
before any build, and the built image's environment is checked and overridden.

Listeners are the test's own, on 127.0.0.1; nothing leaves this machine.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from evaluation.errors import BuildFailed, DockerfileRefused
from evaluation.sandbox.docker_sandbox import LABEL_UID, DockerSandbox, SandboxConfig, ownership_filter
from evaluation.types import Submission
from validator.demo import default_example_dir, prepare_repo

pytestmark = pytest.mark.docker

REVISION = "feedc0de" * 5


def submission(uid: int) -> Submission:
    return Submission(uid=uid, hotkey="5Policy", repo_id="policy/test", revision=REVISION)


def miner_repo(tmp_path: Path, extra: str) -> Path:
    repo = prepare_repo(default_example_dir(), tmp_path / "repo", "5Policy", {"answer": "A"})
    with (repo / "Dockerfile").open("a", encoding="utf-8") as dockerfile:
        dockerfile.write(extra)
    return repo


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.seen.append(conn.recv(4096) or b"(connected)")
                except OSError:
                    self.seen.append(b"(connected)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    docker_client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield docker_client
    docker_client.close()


@pytest.fixture
async def sandbox(sandbox_config: SandboxConfig) -> AsyncIterator[tuple[DockerSandbox, list[str]]]:
    builds: list[str] = []
    docker_sandbox = DockerSandbox(sandbox_config, observe_build=lambda _s, outcome: builds.append(outcome))
    yield docker_sandbox, builds
    await docker_sandbox.cleanup()
    await docker_sandbox.close()


def objects_of(client: docker.DockerClient, validator_id: str, uid: int) -> list[object]:
    filters = ownership_filter(validator_id)
    filters["label"].append(f"{LABEL_UID}={uid}")
    return [*client.containers.list(all=True, filters=filters), *client.images.list(filters=filters)]


async def test_add_of_a_loopback_url_is_refused_before_the_daemon_fetches_it(
    sandbox: tuple[DockerSandbox, list[str]],
    client: docker.DockerClient,
    listener: Listener,
    tmp_path: Path,
) -> None:
    docker_sandbox, builds = sandbox
    url = f"http://127.0.0.1:{listener.port}/validator-secret"
    repo = miner_repo(tmp_path, f"ADD {url} /app/stolen\n")
    refused = r"ADD http://127\.0\.0\.1:\d+/validator-secret /app/stolen: remote sources are not allowed"
    with pytest.raises(DockerfileRefused, match=refused):
        await docker_sandbox.start(submission(41), repo)
    assert builds == []  # no build was even started
    assert listener.seen == []
    assert objects_of(client, docker_sandbox.config.validator_id, 41) == []
    # The listener was there to be reached: the daemon simply never asked.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as probe:
        probe.sendall(b"probe")
    listener.close()
    assert listener.seen == [b"probe"]


async def test_copy_from_another_local_image_is_refused(
    sandbox: tuple[DockerSandbox, list[str]], client: docker.DockerClient, base_image: str, tmp_path: Path
) -> None:
    docker_sandbox, builds = sandbox
    client.images.get(base_image)  # the image the Dockerfile names is right there on the daemon
    repo = miner_repo(tmp_path, f"COPY --from={base_image} /etc/hostname /app/other-image\n")
    with pytest.raises(DockerfileRefused, match=f"--from={base_image}: only earlier stages"):
        await docker_sandbox.start(submission(42), repo)
    assert builds == []
    assert objects_of(client, docker_sandbox.config.validator_id, 42) == []


async def test_an_image_that_sets_ld_preload_is_refused_after_its_build(
    sandbox: tuple[DockerSandbox, list[str]], client: docker.DockerClient, tmp_path: Path
) -> None:
    docker_sandbox, builds = sandbox
    repo = miner_repo(tmp_path, "ENV LD_PRELOAD=/app/model/hook.so\n")
    with pytest.raises(BuildFailed, match=r"sets LD_PRELOAD \(ENV\).*CVE-2025-23266"):
        await docker_sandbox.start(submission(43), repo)
    assert builds == ["built"]  # the Dockerfile itself was fine; its image is what is refused
    mine = ownership_filter(docker_sandbox.config.validator_id)
    containers = client.containers.list(all=True, filters=mine)
    assert [c for c in containers if c.labels.get(LABEL_UID) == "43"] == []  # never run


async def test_the_images_nvidia_variables_are_overridden(
    sandbox: tuple[DockerSandbox, list[str]], client: docker.DockerClient, tmp_path: Path
) -> None:
    docker_sandbox, _ = sandbox
    repo = miner_repo(
        tmp_path, "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_REQUIRE_CUDA=x NVIDIA_DRIVER_CAPABILITIES=all\n"
    )
    model = await docker_sandbox.start(submission(44), repo)
    try:
        container = client.containers.get(model.container_id)
        env = dict(entry.split("=", 1) for entry in container.attrs["Config"]["Env"])
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # no GPU assigned in this test
        assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        assert env["NVIDIA_REQUIRE_CUDA"] == ""
        # The process sees what the runtime saw.
        code, output = container.exec_run(["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"])
        assert code == 0 and b"NVIDIA_VISIBLE_DEVICES=void\n" in output, output
        assert b"NVIDIA_VISIBLE_DEVICES=all" not in output
    finally:
        await docker_sandbox.stop(model)
